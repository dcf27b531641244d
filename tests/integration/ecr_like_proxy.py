"""A proxy in front of the distribution registry that, like ECR, refuses repositories nobody
created: requests for /v2/<name>/... with <name> not listed answer 404 NAME_UNKNOWN with ECR's
message. Everything else is piped to the registry byte for byte, one request per connection.

Usage: ecr_like_proxy.py PORT UPSTREAM_PORT REPOSITORY...
"""
import json, re, socket, sys, threading

PORT, UPSTREAM, KNOWN = int(sys.argv[1]), int(sys.argv[2]), set(sys.argv[3:])


def pipe(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def read_head(sock):
    head = b""
    while b"\r\n\r\n" not in head:
        data = sock.recv(1)
        if not data or not head[:1].isalpha() and head:
            return head or None
        head += data
    return head


def serve(client):
    head = read_head(client)
    # The engine tries TLS first: a ClientHello is not HTTP, close at once as a plain server does.
    if head is None or not head[:1].isalpha():
        client.close()
        return
    path = head.split(b" ", 2)[1].decode()
    match = re.match(r"^/v2/(.+?)/(blobs|manifests|tags)/", path)
    if match and match.group(1) not in KNOWN:
        name = match.group(1)
        body = json.dumps({"errors": [{"code": "NAME_UNKNOWN", "message":
            f"The repository with name '{name}' does not exist in the registry with id '123456789012'"}]}).encode()
        client.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nConnection: close\r\n"
                       + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        client.close()
        return
    upstream = socket.create_connection(("127.0.0.1", UPSTREAM))
    upstream.sendall(head.replace(b"\r\n", b"\r\nConnection: close\r\n", 1))
    threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
    # The answer goes back with Connection: close, so the client opens a new connection next.
    answer = read_head(upstream)
    if answer is not None:
        client.sendall(answer.replace(b"\r\n", b"\r\nConnection: close\r\n", 1))
        pipe(upstream, client)
    client.close()
    upstream.close()


listener = socket.create_server(("127.0.0.1", PORT))
while True:
    connection, _ = listener.accept()
    threading.Thread(target=serve, args=(connection,), daemon=True).start()
