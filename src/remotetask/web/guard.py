"""WSGI middleware around the whole application: what every request must
pass and every response gets, before Pyramid sees either.

- a ``Content-Length`` that is not a number is 400, a body over the limit
  413, before anything reads the body;
- a URL (path or query string) that is not UTF-8 once its %-escapes are
  decoded is 400 (WSGI hands the path over as Latin-1 and Pyramid would
  fail decoding it deep inside its routing);
- every response, the application's and these refusals, carries
  ``X-Content-Type-Options: nosniff`` (no browser guesses HTML from a
  JSON or text body) and ``Referrer-Policy: same-origin``.

Refusals are JSON ``{"error": ..., "status": ...}`` like the API's errors.
"""
import json
import urllib.parse

#: Largest request body accepted (bytes); larger ones get 413.
MAX_BODY = 1024 * 1024

HEADERS = (('X-Content-Type-Options', 'nosniff'),
           ('Referrer-Policy', 'same-origin'))


def badURL(environ):
    """Why the request's URL can not be decoded, or None."""
    try:
        environ.get('PATH_INFO', '').encode('latin-1').decode('utf-8')
        urllib.parse.unquote_to_bytes(
            environ.get('SCRIPT_NAME', '')).decode('utf-8')
        urllib.parse.parse_qsl(environ.get('QUERY_STRING', ''),
                               keep_blank_values=True, encoding='utf-8',
                               errors='strict')
    except UnicodeError:
        return 'the URL is not UTF-8 (after decoding its %-escapes)'
    return None


class Guard:
    """See the module documentation."""

    def __init__(self, app, limit=MAX_BODY):
        self.app = app
        self.limit = limit

    def __call__(self, environ, start_response):
        def withHeaders(status, headers, exc_info=None):
            present = {name.lower() for name, value in headers}
            headers = list(headers) + [
                (name, value) for name, value in HEADERS
                if name.lower() not in present]
            return start_response(status, headers, exc_info)

        try:
            length = int(environ.get('CONTENT_LENGTH') or 0)
        except ValueError:
            return refuse(withHeaders, 400, 'Bad Request',
                          'bad Content-Length header')
        if length < 0:
            return refuse(withHeaders, 400, 'Bad Request',
                          'bad Content-Length header')
        if length > self.limit:
            return refuse(withHeaders, 413, 'Request Entity Too Large',
                          'request body of %d bytes is over the limit of %d '
                          'bytes' % (length, self.limit))
        problem = badURL(environ)
        if problem is not None:
            return refuse(withHeaders, 400, 'Bad Request', problem)
        return self.app(environ, withHeaders)


def refuse(start_response, status, reason, message):
    body = json.dumps({'error': message, 'status': status}).encode('utf-8')
    start_response('%d %s' % (status, reason),
                   [('Content-Type', 'application/json'),
                    ('Content-Length', str(len(body)))])
    return [body]
