"""URLs of the adapter's in-process Django tests."""

urlpatterns: list = []
