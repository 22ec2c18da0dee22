"""The stream backend: ranges, validators, conditional requests, HEAD, bodies."""

from __future__ import annotations

import io
import os
import re
import time
import tracemalloc
from email.utils import formatdate

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from webob import Request

from gaeservices.filetransfers import serve_file
from gaeservices.filetransfers.stream import CHUNK_SIZE, MAX_RANGES

from filetransfers_helpers import call, multipart_parts

CONTENT = bytes(range(256)) * 4  # 1 KiB, every byte value


@pytest.fixture
def root(services):
    path = os.path.join(services.data_dir, "uploads")
    os.makedirs(path)
    with open(os.path.join(path, "data.bin"), "wb") as f:
        f.write(CONTENT)
    with open(os.path.join(path, "notes.txt"), "wb") as f:
        f.write(b"hello\n")
    return path


def app_for(services, name="data.bin", **options):
    def app(environ, start_response):
        return serve_file(Request(environ), name, services=services, **options)(environ, start_response)

    return app


def test_whole_file(services, root):
    result = call(app_for(services))
    assert result.code == 200
    assert result.body == CONTENT
    assert result.headers["Content-Length"] == str(len(CONTENT))
    assert result.headers["Accept-Ranges"] == "bytes"
    assert result.headers["X-Content-Type-Options"] == "nosniff"
    assert result.headers["Content-Type"] == "application/octet-stream"
    assert re.fullmatch(r'"[0-9a-f]+-[0-9a-f]+"', result.headers["ETag"])
    # an unknown type is never shown inline (see test_filetransfers_content)
    assert result.headers["Content-Disposition"] == 'attachment; filename="data.bin"'
    assert "Content-Disposition" not in call(app_for(services, trusted=True)).headers


def test_type_is_guessed_and_overridable(services, root):
    assert call(app_for(services, "notes.txt")).headers["Content-Type"] == "text/plain; charset=utf-8"
    assert call(app_for(services, "notes.txt", content_type="text/markdown", trusted=True)).headers[
        "Content-Type"] == "text/markdown; charset=utf-8"


@pytest.mark.parametrize(
    "header, start, end",
    [("bytes=0-9", 0, 9), ("bytes=1000-", 1000, 1023), ("bytes=-24", 1000, 1023),
     ("bytes=10-5000", 10, 1023), ("bytes = 3 - 4", 3, 4), ("BYTES=0-0", 0, 0)],
)
def test_single_range(services, root, header, start, end):
    result = call(app_for(services), headers={"Range": header})
    assert result.code == 206
    assert result.body == CONTENT[start:end + 1]
    assert result.headers["Content-Range"] == f"bytes {start}-{end}/1024"
    assert result.headers["Content-Length"] == str(end - start + 1)


def test_range_covering_everything_is_a_plain_200(services, root):
    result = call(app_for(services), headers={"Range": "bytes=0-"})
    assert result.code == 200 and result.body == CONTENT


@pytest.mark.parametrize("header", ["bytes=1024-", "bytes=5000-6000", "bytes=-0", "bytes=2000-,3000-"])
def test_unsatisfiable_is_416(services, root, header):
    result = call(app_for(services), headers={"Range": header})
    assert result.code == 416
    assert result.headers["Content-Range"] == "bytes */1024"
    assert result.body == b""


@pytest.mark.parametrize("header", ["bytes=5-1", "bytes=a-b", "items=0-1", "bytes=", "bytes=--1", "0-1", "bytes=1-2-3"])
def test_malformed_range_is_ignored(services, root, header):
    result = call(app_for(services), headers={"Range": header})
    assert result.code == 200 and result.body == CONTENT


def test_several_ranges_are_multipart(services, root):
    result = call(app_for(services), headers={"Range": "bytes=900-909, 0-4, 2-7, -3"})
    assert result.code == 206
    assert result.headers["Content-Type"].startswith("multipart/byteranges; boundary=")
    assert int(result.headers["Content-Length"]) == len(result.body)
    parts = multipart_parts(result)
    # overlapping 0-4 and 2-7 are coalesced; parts come in file order
    assert [(r, b) for _, r, b in parts] == [
        ("bytes 0-7/1024", CONTENT[0:8]),
        ("bytes 900-909/1024", CONTENT[900:910]),
        ("bytes 1021-1023/1024", CONTENT[1021:]),
    ]
    assert all(ctype == "application/octet-stream" for ctype, _, _ in parts)


def test_adjacent_ranges_coalesce_into_one(services, root):
    result = call(app_for(services), headers={"Range": "bytes=0-4,5-9"})
    assert result.code == 206 and result.headers["Content-Range"] == "bytes 0-9/1024"


def test_too_many_ranges_get_the_whole_file(services, root):
    header = "bytes=" + ",".join(f"{i * 10}-{i * 10}" for i in range(MAX_RANGES + 1))
    result = call(app_for(services), headers={"Range": header})
    assert result.code == 200 and result.body == CONTENT


def test_range_ignored_for_head_and_post(services, root):
    head = call(app_for(services), method="HEAD", headers={"Range": "bytes=0-1"})
    assert head.code == 200 and head.body == b"" and head.headers["Content-Length"] == "1024"
    post = call(app_for(services), method="POST", headers={"Range": "bytes=0-1"})
    assert post.code == 200 and post.body == CONTENT


def test_if_none_match(services, root):
    etag = call(app_for(services)).headers["ETag"]
    for header in (etag, f'"nope", {etag}', "W/" + etag, "*"):
        result = call(app_for(services), headers={"If-None-Match": header})
        assert result.code == 304, header
        assert result.body == b""
        assert result.headers["ETag"] == etag
        assert "Content-Length" not in result.headers
    assert call(app_for(services), headers={"If-None-Match": '"other"'}).code == 200
    assert call(app_for(services), method="HEAD", headers={"If-None-Match": etag}).code == 304
    # for other methods a matching If-None-Match is a failed precondition
    assert call(app_for(services), method="POST", headers={"If-None-Match": etag}).code == 412


def test_if_modified_since(services, root):
    last_modified = call(app_for(services)).headers["Last-Modified"]
    mtime = os.stat(os.path.join(root, "data.bin")).st_mtime
    assert call(app_for(services), headers={"If-Modified-Since": last_modified}).code == 304
    later = formatdate(mtime + 60, usegmt=True)
    assert call(app_for(services), headers={"If-Modified-Since": later}).code == 304
    earlier = formatdate(mtime - 60, usegmt=True)
    assert call(app_for(services), headers={"If-Modified-Since": earlier}).code == 200
    assert call(app_for(services), headers={"If-Modified-Since": "garbage"}).code == 200
    # If-None-Match wins over If-Modified-Since
    assert call(app_for(services), headers={"If-None-Match": '"x"', "If-Modified-Since": later}).code == 200


def test_if_match_and_if_unmodified_since(services, root):
    etag = call(app_for(services)).headers["ETag"]
    mtime = os.stat(os.path.join(root, "data.bin")).st_mtime
    assert call(app_for(services), headers={"If-Match": etag}).code == 200
    assert call(app_for(services), headers={"If-Match": '"other"'}).code == 412
    assert call(app_for(services), headers={"If-Match": "W/" + etag}).code == 412  # strong comparison
    assert call(app_for(services), headers={"If-Unmodified-Since": formatdate(mtime - 60, usegmt=True)}).code == 412
    assert call(app_for(services), headers={"If-Unmodified-Since": formatdate(mtime + 60, usegmt=True)}).code == 200


def test_if_range(services, root):
    first = call(app_for(services))
    etag, last_modified = first.headers["ETag"], first.headers["Last-Modified"]
    ranged = {"Range": "bytes=0-9"}
    assert call(app_for(services), headers={**ranged, "If-Range": etag}).code == 206
    assert call(app_for(services), headers={**ranged, "If-Range": last_modified}).code == 206
    assert call(app_for(services), headers={**ranged, "If-Range": '"stale"'}).code == 200
    assert call(app_for(services), headers={**ranged, "If-Range": "W/" + etag}).code == 200
    assert call(app_for(services), headers={**ranged, "If-Range": "Mon, 01 Jan 2001 00:00:00 GMT"}).code == 200


def test_validators_follow_changes(services, root):
    path = os.path.join(root, "data.bin")
    etag = call(app_for(services)).headers["ETag"]
    with open(path, "wb") as f:
        f.write(b"changed")
    os.utime(path, (time.time() + 5, time.time() + 5))
    result = call(app_for(services), headers={"If-None-Match": etag})
    assert result.code == 200 and result.body == b"changed"
    assert result.headers["ETag"] != etag


def test_empty_file(services, root):
    open(os.path.join(root, "empty"), "wb").close()
    assert call(app_for(services, "empty")).body == b""
    result = call(app_for(services, "empty"), headers={"Range": "bytes=-5"})
    assert result.code == 416 and result.headers["Content-Range"] == "bytes */0"


def test_open_file_objects(services, root):
    def app(environ, start_response):
        f = open(os.path.join(root, "notes.txt"), "rb")
        return serve_file(Request(environ), f, services=services, save_as=True)(environ, start_response)

    result = call(app, headers={"Range": "bytes=1-3"})
    assert result.code == 206 and result.body == b"ell"
    assert result.headers["Content-Disposition"] == 'attachment; filename="notes.txt"'
    assert "ETag" in result.headers

    def memory(environ, start_response):
        f = io.BytesIO(b"in memory")
        return serve_file(Request(environ), f, services=services)(environ, start_response)

    result = call(memory, headers={"Range": "bytes=3-"}, file_wrapper=True)
    assert result.code == 206 and result.body == b"memory"
    assert "ETag" not in result.headers  # nothing to derive one from


# --- bodies: file_wrapper, chunking, memory ------------------------------------


class CountingWrapper:
    """A wsgi.file_wrapper that records what the server would do with the file."""

    instances: list = []

    def __init__(self, filelike, block_size=8192):
        self.filelike = filelike
        self.block_size = block_size
        self.bytes_read = 0
        self.start = filelike.tell()
        # what waitress does to size the transfer: seek to the end and back
        self.end = filelike.seek(0, 2)
        filelike.seek(self.start)
        self.fileno = filelike.fileno() if hasattr(filelike, "fileno") else None
        CountingWrapper.instances.append(self)

    def __iter__(self):
        while True:
            data = self.filelike.read(self.block_size)
            if not data:
                return
            self.bytes_read += len(data)
            yield data

    def close(self):
        self.filelike.close()


@pytest.fixture
def big(root):
    path = os.path.join(root, "big.bin")
    with open(path, "wb") as f:
        f.truncate(8 * 1024 * 1024)
        f.seek(5 * 1024 * 1024)
        f.write(b"MARK" + os.urandom(1024 * 1024))
    with open(path, "rb") as f:
        return path, f.read()


def test_file_wrapper_gets_the_range_seeked_and_bounded(services, big):
    path, content = big
    CountingWrapper.instances.clear()
    start, end = 5 * 1024 * 1024, 6 * 1024 * 1024 - 1
    result = call(app_for(services, "big.bin"), headers={"Range": f"bytes={start}-{end}"}, file_wrapper=CountingWrapper)
    assert result.code == 206 and result.body == content[start:end + 1]
    (wrapper,) = CountingWrapper.instances
    assert wrapper.start == start  # seeked before the hand-over, no reading through the prefix
    assert wrapper.bytes_read == end - start + 1
    assert wrapper.block_size == CHUNK_SIZE
    # a range in the middle hides the descriptor (a sendfile to end of file would overrun)
    assert not hasattr(wrapper.filelike, "fileno")
    # the bounded file behaves like a file ending at the range's end (waitress sizes it so)
    assert wrapper.end == end + 1


def test_file_wrapper_for_a_tail_range_exposes_fileno(services, big):
    CountingWrapper.instances.clear()
    call(app_for(services, "big.bin"), headers={"Range": "bytes=-100"}, file_wrapper=CountingWrapper)
    (wrapper,) = CountingWrapper.instances
    assert isinstance(wrapper.fileno, int)


def test_whole_big_file_without_wrapper_reads_in_chunks(services, big):
    path, content = big
    request = Request.blank("/")
    response = serve_file(request, "big.bin", services=services)
    chunks = list(response.app_iter)
    response.app_iter.close()
    assert b"".join(chunks) == content
    assert max(map(len, chunks)) == CHUNK_SIZE


def test_memory_stays_flat(services, big):
    app = app_for(services, "big.bin")
    environ = Request.blank("/").environ
    tracemalloc.start()
    try:
        result = app(environ, lambda status, headers, exc_info=None: None)
        for _ in result:
            pass
        result.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024  # an 8 MiB file, never more than a few chunks held


def test_real_server_with_file_wrapper(services, big):
    """Through waitress over a socket: its file_wrapper sends exactly the range."""
    import http.client
    import threading

    from waitress.server import create_server

    path, content = big
    server = create_server(app_for(services, "big.bin"), host="127.0.0.1", port=0, threads=1)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.effective_port, timeout=10)
        conn.request("GET", "/", headers={"Range": "bytes=5242880-5242889"})
        response = conn.getresponse()
        assert response.status == 206
        assert response.read() == content[5242880:5242890] == b"MARK" + content[5242884:5242890]
        conn.request("GET", "/", headers={"Range": "bytes=0-1,-2"})
        response = conn.getresponse()
        assert response.status == 206
        assert len(response.read()) == int(response.getheader("Content-Length"))
        conn.close()
    finally:
        server.close()
        thread.join(5)


# --- fuzzing -----------------------------------------------------------------------

SIZE = 40
FUZZ_CONTENT = bytes(range(65, 65 + SIZE))


@pytest.fixture
def fuzz_services(services):
    root = os.path.join(services.data_dir, "uploads")
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "f"), "wb") as f:
        f.write(FUZZ_CONTENT)
    return services


number = st.integers(min_value=0, max_value=SIZE + 10)
space = st.sampled_from(["", " ", "  "])


@st.composite
def range_spec(draw):
    kind = draw(st.sampled_from(["closed", "open", "suffix"]))
    a, b = draw(number), draw(number)
    s = draw(space)
    if kind == "closed":
        return f"{s}{a}{s}-{s}{b}{s}", ("closed", a, b)
    if kind == "open":
        return f"{s}{a}-{s}", ("open", a, None)
    return f"{s}-{b}{s}", ("suffix", None, b)


def expected_positions(specs):
    """The byte positions a syntactically valid header asks for; None if it is invalid."""
    positions = set()
    for kind, a, b in specs:
        if kind == "closed":
            if b < a:
                return None
            positions.update(range(a, min(b, SIZE - 1) + 1))
        elif kind == "open":
            positions.update(range(a, SIZE))
        else:
            positions.update(range(max(0, SIZE - b), SIZE) if b > 0 else ())
    return positions


def check_body(result, positions):
    """A 206 holds exactly the bytes at ``positions`` (as one range or as parts)."""
    if result.headers["Content-Type"].startswith("multipart/byteranges"):
        got = set()
        for _, content_range, body in multipart_parts(result):
            start, end = map(int, re.fullmatch(r"bytes (\d+)-(\d+)/40", content_range).groups())
            assert body == FUZZ_CONTENT[start:end + 1]
            got.update(range(start, end + 1))
        assert len(multipart_parts(result)) > 1
    else:
        start, end = map(int, re.fullmatch(r"bytes (\d+)-(\d+)/40", result.headers["Content-Range"]).groups())
        assert result.body == FUZZ_CONTENT[start:end + 1]
        got = set(range(start, end + 1))
    assert got == positions


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=st.lists(range_spec(), min_size=1, max_size=5), unit=st.sampled_from(["bytes", "Bytes"]))
def test_fuzz_valid_ranges(fuzz_services, specs, unit):
    header = unit + "=" + ",".join(text for text, _ in specs)
    result = call(app_for(fuzz_services, "f"), headers={"Range": header})
    positions = expected_positions([spec for _, spec in specs])
    if positions is None or positions == set(range(SIZE)):
        assert result.code == 200 and result.body == FUZZ_CONTENT
    elif not positions:
        assert result.code == 416 and result.headers["Content-Range"] == "bytes */40"
    else:
        assert result.code == 206, header
        check_body(result, positions)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=st.one_of(st.text(max_size=40), st.from_regex(r"bytes=[0-9 ,\-a]{0,20}", fullmatch=True)))
def test_fuzz_arbitrary_range_headers(fuzz_services, header):
    try:
        header.encode("latin-1")
    except UnicodeEncodeError:
        header = header.encode("utf-8").decode("latin-1")
    result = call(app_for(fuzz_services, "f"), headers={"Range": header})
    assert result.code in (200, 206, 416)
    if result.code == 200:
        assert result.body == FUZZ_CONTENT
    elif result.code == 416:
        assert result.body == b"" and result.headers["Content-Range"] == "bytes */40"
    else:
        assert len(result.body) == int(result.headers["Content-Length"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    inm=st.sampled_from([None, "ETAG", "W/ETAG", '"other"', "*", "garbage", '"other", ETAG']),
    ims=st.sampled_from([None, "LM", "BEFORE", "AFTER", "not a date"]),
    if_range=st.sampled_from([None, "ETAG", "W/ETAG", '"other"', "LM", "BEFORE"]),
    ranged=st.booleans(),
    method=st.sampled_from(["GET", "HEAD"]),
)
def test_fuzz_conditional_headers(fuzz_services, inm, ims, if_range, ranged, method):
    app = app_for(fuzz_services, "f")
    plain = call(app)
    etag, last_modified = plain.headers["ETag"], plain.headers["Last-Modified"]
    mtime = int(os.stat(os.path.join(fuzz_services.data_dir, "uploads", "f")).st_mtime)
    values = {"ETAG": etag, "W/ETAG": "W/" + etag, "LM": last_modified,
              "BEFORE": formatdate(mtime - 100, usegmt=True), "AFTER": formatdate(mtime + 100, usegmt=True)}

    def value(v):
        for key in sorted(values, key=len, reverse=True):
            v = v.replace(key, values[key])
        return v

    headers = {}
    if inm is not None:
        headers["If-None-Match"] = value(inm)
    if ims is not None:
        headers["If-Modified-Since"] = value(ims)
    if if_range is not None:
        headers["If-Range"] = value(if_range)
    if ranged:
        headers["Range"] = "bytes=5-9"
    result = call(app, headers=headers, method=method)

    # the oracle, straight from RFC 9110
    if inm is not None:
        not_modified = inm in ("ETAG", "W/ETAG", "*", '"other", ETAG')
    else:
        not_modified = ims in ("LM", "AFTER")
    if not_modified:
        assert result.code == 304 and result.body == b""
        return
    range_applies = ranged and method == "GET" and (if_range is None or if_range in ("ETAG", "LM"))
    if range_applies:
        assert result.code == 206 and result.body == FUZZ_CONTENT[5:10]
    else:
        assert result.code == 200
        assert result.body == (b"" if method == "HEAD" else FUZZ_CONTENT)
