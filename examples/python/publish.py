"""Publishes a signed message with requests: the secret never travels.

    PUSHRELAY_URL=http://localhost:8080 PUSHRELAY_KEY_NAME=dev PUSHRELAY_SECRET=... python publish.py alice
"""
import hashlib
import hmac
import json
import os
import secrets
import sys
import time

import requests

relay = os.environ.get("PUSHRELAY_URL", "http://localhost:8080")
key_name = os.environ.get("PUSHRELAY_KEY_NAME", "dev")
secret = os.environ["PUSHRELAY_SECRET"]
user = sys.argv[1] if len(sys.argv) > 1 else "alice"

# Sign exactly the bytes that are sent: serialize once, send those.
body = json.dumps({"event": "report_ready", "data": {"report": "Q3", "pages": 12}, "users": [user]})
path = "/v1/publish"
timestamp = str(int(time.time()))
# A fresh nonce per request: the relay accepts each once, so two identical requests in one second both pass.
nonce = secrets.token_urlsafe(16)
signature = hmac.new(
    secret.encode(), f"{timestamp}.{nonce}.POST.{path}.{body}".encode(), hashlib.sha256
).hexdigest()

res = requests.post(
    relay + path,
    data=body,
    timeout=5,
    headers={
        "Content-Type": "application/json",
        "X-Pushrelay-Key": key_name,
        "X-Pushrelay-Timestamp": timestamp,
        "X-Pushrelay-Nonce": nonce,
        "X-Pushrelay-Signature": signature,
    },
)
answer = res.json()
if res.status_code != 200:
    sys.exit(f"refused: {answer['error']['code']}: {answer['error']['message']}")
print("published", answer["id"], "offline:", answer["offline"])
