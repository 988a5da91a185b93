"""The public app: a photo in, the fruit out within seconds (`fruits app`).

An ASGI app (FastAPI, server-rendered Jinja2 templates, plain JavaScript as static files) on the
running stream. It never classifies anything itself: it lands each photo where the stream reads
(fruits.appuploads: a local landing folder, or S3 through a presigned POST the browser sends
straight to the bucket) and reads the answer the stream wrote for it (fruits.answers), by id.

    app.main         create_app(settings): the composition root (stores, middlewares, routers)
    app.context      AppContext: what the routes share; KnownMaps, each model version's map and thumbnails
    app.dependencies the routes' dependencies: the context, CSRF checks, rate limits, refusals
    app.security     CSRF tokens, rate limits, size limits, security headers, the access log
    app.uploads      where uploads land: LocalUploads (atomic rename) | S3Uploads (presigned POST); magic bytes
    app.images       re-encoded thumbnails without EXIF, the known map as SVG
    app.views        what the page shows of an Answer (plain words for rejections)
    app.serve        uvicorn as every caller runs it (`fruits app`, demo, bench, tests)
    app.routers      pages, uploads, answers, known (thumbnails), ops: one router per concern

Layer: above the core and the jobs (it reads streaming.ops for /ops), below cli/ (pyproject's
import-linter contract).
"""
