"""The pass as users script it today, with the official Python SDK, sequentially.

Usage: baseline.py ENDPOINT(host:port) ACCESS_KEY_ID SECRET SAMPLE

Lists every order (ShowSize 100, retrying when throttled), then renews the first
SAMPLE WILLEXPIRED orders one after another: renew without a CSR (CAS makes the
key), poll DescribeCertificateState every second until issued. Prints list_s,
renew_each_s and renewed for the bench to extrapolate.
"""

import sys
import time

from alibabacloud_tea_openapi.models import Config
from alibabacloud_cas20200407.client import Client
from alibabacloud_cas20200407 import models as cas

endpoint, key_id, secret, sample = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
client = Client(Config(access_key_id=key_id, access_key_secret=secret, endpoint=endpoint, protocol="http"))


def call(fn, req):
    while True:
        try:
            return fn(req).body
        except Exception as e:  # a user's script sleeps and tries again when throttled
            if "Throttling" in str(e):
                time.sleep(1)
                continue
            raise


start = time.time()
orders, page = [], 1
while True:
    body = call(client.list_user_certificate_order, cas.ListUserCertificateOrderRequest(current_page=page, show_size=100))
    orders.extend(body.certificate_order_list)
    if len(orders) >= body.total_count or not body.certificate_order_list:
        break
    page += 1
list_s = time.time() - start

expiring = [o for o in orders if o.status == "WILLEXPIRED"][:sample]
start = time.time()
for o in expiring:
    new_id = call(client.renew_certificate_order_for_package_request, cas.RenewCertificateOrderForPackageRequestRequest(order_id=o.order_id)).order_id
    while True:
        s = call(client.describe_certificate_state, cas.DescribeCertificateStateRequest(order_id=new_id))
        if s.type == "certificate":
            break
        time.sleep(1)
each = (time.time() - start) / max(len(expiring), 1)
print(f"list_s={list_s:.2f}")
print(f"renew_each_s={each:.3f}")
print(f"renewed={len(expiring)}")
