"""A token service for the distribution registry's `auth: token` (test double).

Usage: token_server.py PORT KEY CERT USER PASSWORD. Signs RS256 JWTs with KEY (via openssl),
with CERT in the x5c header, which the registry trusts through its rootcertbundle. Anonymous
callers get pull access; USER:PASSWORD (HTTP basic) gets what it asks for; a wrong password 401.
"""
import base64, json, subprocess, sys, time, uuid
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import urlparse, parse_qs

PORT, KEY, CERT, USER, PASSWORD = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
DER = subprocess.run(["openssl", "x509", "-in", CERT, "-outform", "DER"], check=True, capture_output=True).stdout


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(service, access):
    header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(DER).decode()]}
    now = int(time.time())
    claims = {"iss": "n10n-test", "sub": "test", "aud": service, "exp": now + 300, "nbf": now - 10,
              "iat": now, "jti": uuid.uuid4().hex, "access": access}
    signing_input = (b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())).encode()
    signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", KEY], input=signing_input,
                               check=True, capture_output=True).stdout
    return signing_input.decode() + "." + b64url(signature)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        query = parse_qs(urlparse(self.path).query)
        auth = self.headers.get("Authorization", "")
        user = None
        if auth.startswith("Basic "):
            given = base64.b64decode(auth[6:]).decode()
            if given != USER + ":" + PASSWORD:
                self.send_response(401)
                self.end_headers()
                return
            user = USER
        access = []
        for scope in query.get("scope", []):
            kind, name, actions = scope.split(":")
            allowed = actions.split(",") if user else [a for a in actions.split(",") if a == "pull"]
            access.append({"type": kind, "name": name, "actions": allowed})
        body = json.dumps({"token": token(query.get("service", [""])[0], access)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        sys.stderr.write("token: " + (args[0] % args[1:]) + "\n")


HTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
