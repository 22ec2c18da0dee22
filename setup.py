from setuptools import find_packages, setup

with open("README.md", encoding="utf-8") as f:
    long_description = f.read()

SQL = ["SQLAlchemy>=2.0", "psycopg[binary]>=3.1"]
APPENGINE = ["appengine-python-standard>=1.1"]
CELERY = ["celery>=5.3,<6", "redis>=5"]  # 5.3: broker_connection_retry_on_startup; kombu global_keyprefix
DJANGO = ["Django>=5.2"]
MAIL = ["aiosmtpd>=1.4"]
YAML = ["ruamel.yaml>=0.17"]  # queue.yaml for the local queue; what the App Engine SDK reads it with
DEMO = ["waitress>=3"] + SQL + MAIL

setup(
    name="gaeservices",
    version="0.1.0",
    description="App Engine's services (cache, sessions, tasks, mail, file transfers) for any WSGI app",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["gaeservices", "gaeservices.*"]),
    package_data={"gaeservices": ["py.typed"]},  # PEP 561: type checkers read our hints
    install_requires=["WebOb>=1.8.8", "itsdangerous>=2.1", "pymemcache>=4.0,<4.1", "multipart>=1.2,<3"],
    extras_require={
        "appengine": APPENGINE,
        "sql": SQL,
        "celery": CELERY,
        "django": DJANGO,
        "mail": MAIL,
        "yaml": YAML,
        "demo": DEMO,
        "dev": sorted(
            set(
                SQL
                + APPENGINE
                + CELERY
                + DJANGO
                + DEMO
                + MAIL
                + YAML
                + [
                    "pytest>=7",
                    "pytest-timeout>=2",
                    "ruff>=0.4",
                    # `make lint`: a new mypy release finds new things, so one minor at a time
                    "mypy>=2.4,<2.5",
                    "types-WebOb",
                    "types-waitress",
                    # tests/test_installed.py builds the sdist and wheel
                    "build>=1",
                    "hypothesis>=6",
                    "gunicorn>=22",  # the real WSGI server behind nginx and Apache in the tests
                    "Flask>=3",  # examples/flask
                    "cryptography>=41",  # throwaway certificates for the STARTTLS tests
                    "playwright>=1.45",  # drives Debian's chromium (tests/browser_fixtures.py)
                    # peers the benchmarks measure against
                    "Beaker>=1.12",
                    "python-memcached>=1.59",
                    "huey>=2.5",
                    "whitenoise>=6",
                    "Werkzeug>=3",
                    # a real multi-process server for the session tests
                    "gunicorn>=21",
                ]
            )
        ),
    },
    entry_points={"console_scripts": ["gaeservices = gaeservices.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Framework :: Django",
        "Topic :: Internet :: WWW/HTTP :: WSGI :: Middleware",
    ],
)
