from django.contrib.auth import views as auth_views
from django.urls import include, path

from accounts import views

urlpatterns = [
    path("", views.home, name="home"),
    path("about/", views.about, name="about"),
    path("register/", views.register, name="register"),
    path("login/", auth_views.LoginView.as_view(template_name="accounts/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("files/", views.files, name="files"),
    path("files/<int:pk>/", views.download, name="download"),
    path("", include("gaeservices.django.urls")),  # POST /_ah/queue/deferred
]
