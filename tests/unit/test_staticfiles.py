"""/static/ from memory (labs/staticfiles.py): what a browser loading the lesson
page gets, a 304 while a file is unchanged, the new file once it changed."""
import gzip
import os

import pytest

from labs.staticfiles import StaticFiles


async def get(app, path, headers=(), method="GET"):
    sent = []

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        sent.append(message)
    await app({"type": "http", "method": method, "path": path, "headers": list(headers)},
              receive, send)
    start, body = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], dict(start["headers"]), body


async def not_static(scope, receive, send):
    await send({"type": "http.response.start", "status": 299, "headers": []})
    await send({"type": "http.response.body", "body": b"the site"})


@pytest.fixture
def static_dir(tmp_path, settings):
    (tmp_path / "app.js").write_text("console.log('lab');\n" * 200)
    (tmp_path / "tiny.css").write_text("body{}")
    settings.STATICFILES_DIRS = [str(tmp_path)]
    return tmp_path


async def test_a_file_is_served_with_its_type_and_etag_then_304_while_unchanged(static_dir):
    app = StaticFiles(not_static)
    status, headers, body = await get(app, "/static/app.js")
    assert status == 200 and body == (static_dir / "app.js").read_bytes()
    assert headers[b"content-type"].startswith(b"text/javascript") or \
        headers[b"content-type"].startswith(b"application/javascript")
    assert headers[b"cache-control"] == b"no-cache"
    assert int(headers[b"content-length"]) == len(body)
    status, _, body = await get(app, "/static/app.js", [(b"if-none-match", headers[b"etag"])])
    assert (status, body) == (304, b"")


async def test_gzip_when_the_browser_takes_it(static_dir):
    app = StaticFiles(not_static)
    status, headers, body = await get(app, "/static/app.js", [(b"accept-encoding", b"gzip, br")])
    assert headers[b"content-encoding"] == b"gzip"
    assert gzip.decompress(body) == (static_dir / "app.js").read_bytes()
    _, headers, body = await get(app, "/static/tiny.css", [(b"accept-encoding", b"gzip")])
    assert b"content-encoding" not in headers and body == b"body{}"  # too small to gain


async def test_a_changed_file_is_read_again(static_dir):
    app = StaticFiles(not_static)
    _, first, _ = await get(app, "/static/tiny.css")
    (static_dir / "tiny.css").write_text("body{color:red}")
    os.utime(static_dir / "tiny.css", ns=(1, 2_000_000_000_000_000_000))
    status, headers, body = await get(app, "/static/tiny.css", [(b"if-none-match", first[b"etag"])])
    assert status == 200 and body == b"body{color:red}" and headers[b"etag"] != first[b"etag"]


async def test_missing_files_and_paths_out_of_the_static_dirs_are_404(static_dir):
    (static_dir.parent / "secret.txt").write_text("not static")
    app = StaticFiles(not_static)
    for path in ("/static/nothing.js", "/static/../secret.txt", "/static/a/../../secret.txt",
                 "/static/", "/static//etc/passwd"):
        status, _, body = await get(app, path)
        assert status == 404, path
        assert b"not static" not in body and b"root:" not in body


async def test_other_paths_and_methods(static_dir):
    app = StaticFiles(not_static)
    assert (await get(app, "/lessons/"))[0] == 299
    assert (await get(app, "/static/app.js", method="POST"))[0] == 405
    status, headers, body = await get(app, "/static/app.js", method="HEAD")
    assert status == 200 and body == b"" and int(headers[b"content-length"]) > 0


async def test_a_bundle_is_its_files_joined_in_order_and_follows_their_changes(static_dir):
    (static_dir / "lib.js").write_text("var lib = 1\n//# sourceMappingURL=lib.js.map\n")
    app = StaticFiles(not_static, bundles={"bundles/page.js": ("lib.js", "app.js")})
    status, headers, body = await get(app, "/static/bundles/page.js")
    assert status == 200 and headers[b"content-type"].startswith(b"text/javascript")
    # Each file's statements end before the next file's begin; no stale map comment.
    assert body.startswith(b"var lib = 1\n;\nconsole.log('lab');")
    assert b"sourceMappingURL" not in body and body.count(b"console.log") == 200
    status, _, _ = await get(app, "/static/bundles/page.js", [(b"if-none-match", headers[b"etag"])])
    assert status == 304
    (static_dir / "lib.js").write_text("var lib = 2\n")
    status, changed, body = await get(app, "/static/bundles/page.js",
                                      [(b"if-none-match", headers[b"etag"])])
    assert status == 200 and body.startswith(b"var lib = 2\n;\n") and changed[b"etag"] != headers[b"etag"]
    (static_dir / "lib.js").unlink()
    assert (await get(app, "/static/bundles/page.js"))[0] == 404


def test_the_lesson_page_loads_one_script_and_one_stylesheet_or_each_file_behind_a_server(settings):
    from django.template import Context, Template
    from labs.staticfiles import BUNDLES
    page = Template('{% load bundles %}{% bundle "bundles/lesson.js" %}{% bundle "bundles/lesson.css" %}')
    assert page.render(Context()) == ('<script src="/static/bundles/lesson.js"></script>'
                                      '<link rel="stylesheet" href="/static/bundles/lesson.css">')
    settings.SERVE_STATIC = False  # collectstatic's files, served by a server in front
    html = page.render(Context())
    for path in BUNDLES["bundles/lesson.js"] + BUNDLES["bundles/lesson.css"]:
        assert f'"/static/{path}"' in html
    assert "bundles/" not in html
