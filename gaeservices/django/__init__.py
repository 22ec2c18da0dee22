"""The Django adapter: Django's mail, cache, session, task and file APIs on the services.

Each module maps one Django contract onto a service and holds no service logic of
its own:

- :mod:`.settings_base` -- ``from gaeservices.django.settings_base import *``;
- :mod:`.cache` -- ``CacheBackend``, a complete ``BaseCache`` over the cache service;
- :mod:`.sessions` -- ``SESSION_ENGINE = "gaeservices.django.sessions"``;
- :mod:`.mail` -- ``EmailBackend`` (deferred) and ``SyncEmailBackend``;
- :mod:`.tasks` -- a ``django.tasks`` backend that enqueues through ``defer``;
- :mod:`.filetransfers` -- the django-filetransfers API, its template tag and storage;
- :mod:`.urls` -- the deferred-task endpoint, mounted in a ``urls.py``.

Only this package imports Django. Importing it alone imports nothing of Django.
"""

