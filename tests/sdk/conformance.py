"""Drives the cas-renewd simulator with Alibaba Cloud's official Python SDKs.

Usage: conformance.py ENDPOINT(host:port) ACCESS_KEY_ID SECRET CSR_FILE

Every call goes through the generated SDK clients (alibabacloud-cas20200407,
alibabacloud-alidns20150109) exactly as a user's script would, so the SDK's own
signing and its response models check the simulator. Every certificate and key
the simulator hands out is also loaded with python-cryptography, whose DER parser
is strict (it refuses, say, an explicitly encoded default value). Exits non-zero
on the first mismatch; prints one line per check.
"""

import sys
import urllib.request

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key

from alibabacloud_tea_openapi.models import Config
from alibabacloud_cas20200407.client import Client as CasClient
from alibabacloud_cas20200407 import models as cas
from alibabacloud_alidns20150109.client import Client as DnsClient
from alibabacloud_alidns20150109 import models as dns

endpoint, key_id, secret, csr_file = sys.argv[1:5]
# "pending": the simulator leaves renewals pending application (a second run);
# "instances": V2.0 instances (a third); "instances-switched WEBROOT": the other
# readings of the open V2.0 questions (a fourth).
mode = sys.argv[5] if len(sys.argv) > 5 else "main"
csr = open(csr_file).read()
checks = 0


def check(cond, what):
    global checks
    if not cond:
        print(f"FAIL: {what}", flush=True)
        sys.exit(1)
    checks += 1
    print(f"ok: {what}", flush=True)


def strict_certs(pem, what, count):
    """Loads every certificate of a PEM bundle and parses each extension."""
    try:
        certs = x509.load_pem_x509_certificates(pem.encode())
        for c in certs:
            for ext in c.extensions:
                ext.value
        error = "" if len(certs) == count else f" (found {len(certs)})"
    except Exception as e:  # cryptography raises ValueError with the parse error
        certs, error = [], f" ({e!r})"
    check(len(certs) == count, f"{what}: python-cryptography loads {count} certificate(s) strictly{error}")
    return certs


def spki(public_key):
    return public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def config(secret_value, algorithm=None):
    c = Config(access_key_id=key_id, access_key_secret=secret_value, endpoint=endpoint, protocol="http")
    if algorithm:
        c.signature_algorithm = algorithm
    return c


def pending_application_run():
    """A renewal left pending application, applied for with the V2.0 calls."""
    client = CasClient(config(secret))
    orders = client.list_user_certificate_order(cas.ListUserCertificateOrderRequest()).body.certificate_order_list
    www = next(o for o in orders if o.domain == "www.example.com")
    new_id = client.renew_certificate_order_for_package_request(
        cas.RenewCertificateOrderForPackageRequestRequest(order_id=www.order_id, csr=csr)
    ).body.order_id
    states = [client.describe_certificate_state(cas.DescribeCertificateStateRequest(order_id=new_id)).body.type for _ in range(3)]
    check(states == ["payed"] * 3, f"a renewal pending application stays payed: {states}")
    listed = client.list_user_certificate_order(cas.ListUserCertificateOrderRequest(keyword="www.example.com")).body.certificate_order_list
    instance = next(o.instance_id for o in listed if o.order_id == new_id)
    check(isinstance(instance, str) and instance, f"the new order has InstanceId {instance}")
    u = client.update_instance(cas.UpdateInstanceRequest(instance_id=instance, csr=csr, generate_csr_method="upload", domain="www.example.com", validation_method="DNS"))
    check(isinstance(u.body.request_id, str) and u.body.request_id, "UpdateInstance answers a RequestId")
    a = client.apply_certificate(cas.ApplyCertificateRequest(instance_id=instance))
    check(isinstance(a.body.request_id, str) and a.body.request_id, "ApplyCertificate answers a RequestId")
    for _ in range(10):
        s = client.describe_certificate_state(cas.DescribeCertificateStateRequest(order_id=new_id)).body
        if s.type == "certificate":
            break
    check(s.type == "certificate", f"the applied renewal is issued ({s.type})")
    try:
        client.apply_certificate(cas.ApplyCertificateRequest(instance_id=instance))
        check(False, "a second ApplyCertificate is refused")
    except Exception as e:  # the SDK raises its ClientException with .code
        check(getattr(e, "code", None), f"a second ApplyCertificate is refused ({getattr(e, 'code', None)})")
    print(f"{checks} passed, 0 failed")
    sys.exit(0)


def instances_run():
    """SSL Certificate Management V2.0: every instance operation through the SDK."""
    client = CasClient(config(secret))
    seen, page = [], 1
    while True:
        body = client.list_instances(cas.ListInstancesRequest(current_page=page, show_size=1)).body
        check(isinstance(body.total_count, int) and isinstance(body.request_id, str), f"ListInstances page {page} parses")
        seen.extend(body.instance_list)
        if len(seen) >= body.total_count or not body.instance_list:
            break
        page += 1
    check(len(seen) == 2 and page == 2, f"ListInstances paging walked {page} pages for {len(seen)} instances")
    check(isinstance(body.enable_reissue_count, int) and isinstance(body.disable_reissue_count, int), "ListInstances counts managed re-issue")
    www = next(i for i in seen if i.domain == "www.example.com")
    check(www.status == "normal" and www.certificate_status == "willExpire", f"instance {www.instance_id}: {www.status} / {www.certificate_status}")
    check(isinstance(www.instance_end_time, int) and www.instance_end_time < 10**11, "InstanceEndTime is seconds")
    check(isinstance(www.certificate_not_after, int) and www.certificate_not_after < 10**11, "CertificateNotAfter is seconds")
    inactive = next(i for i in seen if i.domain != "www.example.com")
    check(inactive.status == "inactive" and inactive.certificate_id is None, f"an instance without a certificate is {inactive.status}")
    filtered = client.list_instances(cas.ListInstancesRequest(status="normal", keyword="www", show_size=100)).body
    check(filtered.total_count == 1, "ListInstances Status and Keyword filters")
    d = client.get_instance_detail(cas.GetInstanceDetailRequest(instance_id=www.instance_id)).body
    check(d.instance_id == www.instance_id and d.certificate_id == www.certificate_id and d.domain_validation_list == [], "GetInstanceDetail parses")
    u = client.update_instance(cas.UpdateInstanceRequest(
        instance_id=www.instance_id, csr=csr, generate_csr_method="upload", domain="www.example.com",
        validation_method="DNS", key_algorithm="ECC_256", contact_id_list=[1],
        tags=[cas.UpdateInstanceRequestTags(tag_key="managed-by", tag_value="cas-renewd")],
    ))
    check(isinstance(u.body.request_id, str) and u.body.request_id, "UpdateInstance answers a RequestId")
    a = client.apply_certificate(cas.ApplyCertificateRequest(instance_id=www.instance_id))
    check(isinstance(a.body.request_id, str) and a.body.request_id, "ApplyCertificate answers a RequestId")
    try:
        client.apply_certificate(cas.ApplyCertificateRequest(instance_id=www.instance_id))
        check(False, "a second ApplyCertificate under review is refused")
    except Exception as e:  # the SDK raises its ClientException with .code
        check(getattr(e, "code", None), f"a second ApplyCertificate under review is refused ({getattr(e, 'code', None)})")
    tasks = [client.get_task_attribute(cas.GetTaskAttributeRequest(task_id=www.instance_id, task_type="ApplyCertificate")).body.task_status for _ in range(2)]
    check(tasks == ["processing", "success"], f"GetTaskAttribute goes {tasks}")
    d = client.get_instance_detail(cas.GetInstanceDetailRequest(instance_id=www.instance_id)).body
    check(d.status == "pending" and d.generate_csr_method == "upload" and d.csr, f"the application is {d.status} with our CSR")
    v = d.domain_validation_list[0]
    check(v.validation_type == "TXT" and v.root_domain == "example.com" and v.validation_value, f"DomainValidationList asks for {v.validation_type} {v.validation_key}")
    dns_client = DnsClient(config(secret))
    dns_client.add_domain_record(dns.AddDomainRecordRequest(domain_name=v.root_domain, rr=v.validation_key, type="TXT", value=v.validation_value))
    for _ in range(10):
        d = client.get_instance_detail(cas.GetInstanceDetailRequest(instance_id=www.instance_id)).body
        if d.status != "pending":
            break
    check(d.status == "normal" and d.certificate_status == "issued" and d.certificate_id != www.certificate_id, f"re-issued: {d.status} / {d.certificate_status}, CertificateId {d.certificate_id}")
    detail = client.get_user_certificate_detail(cas.GetUserCertificateDetailRequest(cert_id=d.certificate_id)).body
    leaf = strict_certs(detail.cert, "instance GetUserCertificateDetail Cert", 2)[0]
    ours = x509.load_pem_x509_csr(csr.encode()).public_key()
    check(spki(leaf.public_key()) == spki(ours) and detail.key in (None, ""), "the instance certificate is for our CSR's key, no Key sent")
    check(detail.instance_id == www.instance_id, "GetUserCertificateDetail names the instance")
    print(f"{checks} passed, 0 failed")
    sys.exit(0)


def follow(client, instance_id):
    """GetInstanceDetail until the instance is no longer pending."""
    for _ in range(10):
        d = client.get_instance_detail(cas.GetInstanceDetailRequest(instance_id=instance_id)).body
        if d.status != "pending":
            return d
    return d


def refused(call, what):
    try:
        call()
        check(False, what)
    except Exception as e:  # the SDK raises its ClientException with .code
        check(getattr(e, "code", None), f"{what} ({getattr(e, 'code', None)})")


def instances_switched_run(webroot):
    """The other readings of the open V2.0 questions, as the SDK sees them: the
    RequestId of ApplyCertificate as the TaskId, instances in the V1 listing, a
    TXT key as an absolute name with a quoted value, an HTTP key as a URL with a
    content of several lines."""
    import os
    client = CasClient(config(secret))
    orders = client.list_user_certificate_order(cas.ListUserCertificateOrderRequest(show_size=50)).body
    listed = [o for o in orders.certificate_order_list if (o.instance_id or "").startswith("cas-ivauto-")]
    check(len(listed) == 2 and all(isinstance(o.order_id, int) and isinstance(o.certificate_id, int) for o in listed),
          f"ListUserCertificateOrder lists {len(listed)} instances with OrderId and CertificateId")
    certs = client.list_user_certificate_order(cas.ListUserCertificateOrderRequest(order_type="CERT", show_size=50)).body
    check(sorted(c.certificate_id for c in certs.certificate_order_list if c.instance_id in {o.instance_id for o in listed})
          == sorted(o.certificate_id for o in listed), "the CERT list shows the instances' certificates")
    www_order = next(o for o in listed if o.domain == "www.example.com")
    refused(lambda: client.renew_certificate_order_for_package_request(
        cas.RenewCertificateOrderForPackageRequestRequest(order_id=www_order.order_id, csr=csr)),
        "RenewCertificateOrderForPackageRequest on an instance's OrderId is refused")
    www, api = www_order.instance_id, next(o for o in listed if o.domain == "api.example.com").instance_id

    client.update_instance(cas.UpdateInstanceRequest(instance_id=www, csr=csr, generate_csr_method="upload", validation_method="DNS"))
    rid = client.apply_certificate(cas.ApplyCertificateRequest(instance_id=www)).body.request_id
    tasks = [client.get_task_attribute(cas.GetTaskAttributeRequest(task_id=rid)).body.task_status for _ in range(2)]
    check(tasks == ["processing", "success"], f"GetTaskAttribute by ApplyCertificate's RequestId goes {tasks}")
    refused(lambda: client.get_task_attribute(cas.GetTaskAttributeRequest(task_id=www)), "GetTaskAttribute by InstanceId is refused")
    v = client.get_instance_detail(cas.GetInstanceDetailRequest(instance_id=www)).body.domain_validation_list[0]
    check(v.validation_key == "_dnsauth.www.example.com." and v.validation_value.startswith('"'),
          f"TXT key {v.validation_key} value {v.validation_value}")
    rr = v.validation_key.rstrip(".")[: -len("." + v.root_domain)]
    DnsClient(config(secret)).add_domain_record(dns.AddDomainRecordRequest(
        domain_name=v.root_domain, rr=rr, type="TXT", value=v.validation_value.strip('"')))
    d = follow(client, www)
    check(d.certificate_status == "issued" and d.certificate_id != www_order.certificate_id, f"www re-issued: {d.status}")

    csr_api = open(csr_file.replace("www.csr", "api.csr")).read()
    client.update_instance(cas.UpdateInstanceRequest(instance_id=api, csr=csr_api, generate_csr_method="upload", validation_method="HTTP"))
    client.apply_certificate(cas.ApplyCertificateRequest(instance_id=api))
    v = client.get_instance_detail(cas.GetInstanceDetailRequest(instance_id=api)).body.domain_validation_list[0]
    prefix = "http://api.example.com/"
    check(v.validation_type == "HTTP" and v.validation_key.startswith(prefix) and len(v.validation_value.splitlines()) == 3,
          f"HTTP key {v.validation_key}, {len(v.validation_value.splitlines())} lines")
    path = os.path.join(webroot, v.validation_key[len(prefix):])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(v.validation_value)
    d = follow(client, api)
    check(d.certificate_status == "issued", f"api re-issued: {d.status}")
    print(f"{checks} passed, 0 failed")
    sys.exit(0)


if mode == "pending":
    pending_application_run()
if mode == "instances":
    instances_run()
if mode == "instances-switched":
    instances_switched_run(sys.argv[6])

for algorithm, orders in ((None, 2), ("v2", 3)):  # the first pass renews one
    label = "ACS3-HMAC-SHA256" if algorithm is None else "HMAC-SHA1 (v2)"
    client = CasClient(config(secret, algorithm))

    # Paging: one entry per page until TotalCount.
    seen, page = [], 1
    while True:
        r = client.list_user_certificate_order(cas.ListUserCertificateOrderRequest(current_page=page, show_size=1))
        body = r.body
        check(isinstance(body.total_count, int) and isinstance(body.request_id, str), f"{label}: list page {page} parses")
        seen.extend(body.certificate_order_list)
        if len(seen) >= body.total_count or not body.certificate_order_list:
            break
        page += 1
    check(len(seen) == body.total_count == orders and page == orders, f"{label}: paging walked {page} pages for {len(seen)} orders")
    www = next(o for o in seen if o.domain == "www.example.com")
    check(isinstance(www.order_id, int) and www.status == "WILLEXPIRED", f"{label}: order model has OrderId {www.order_id} and Status {www.status}")
    check(isinstance(www.cert_end_time, int) and www.cert_end_time > 10**12, f"{label}: CertEndTime is milliseconds")
    filtered = client.list_user_certificate_order(cas.ListUserCertificateOrderRequest(status="WILLEXPIRED", keyword="www"))
    check(filtered.body.total_count == 1, f"{label}: Status and Keyword filters")
    certs = client.list_user_certificate_order(cas.ListUserCertificateOrderRequest(order_type="CERT"))
    check(all(isinstance(c.certificate_id, int) and c.common_name for c in certs.body.certificate_order_list), f"{label}: CERT listing has CertificateId and CommonName")

    if algorithm is None:
        state = client.describe_certificate_state(cas.DescribeCertificateStateRequest(order_id=www.order_id))
        check(state.body.type == "certificate" and "BEGIN CERTIFICATE" in state.body.certificate, "describe of an issued order returns its certificate")
        leaf = strict_certs(state.body.certificate, "DescribeCertificateState Certificate", 2)[0]
        key = load_pem_private_key(state.body.private_key.encode(), password=None)
        check(spki(key.public_key()) == spki(leaf.public_key()), "python-cryptography loads the PrivateKey CAS made, and it is the leaf's")
        www_cert = next(c for c in certs.body.certificate_order_list if c.common_name == "www.example.com")
        original = client.get_user_certificate_detail(cas.GetUserCertificateDetailRequest(cert_id=www_cert.certificate_id)).body
        strict_certs(original.cert, "GetUserCertificateDetail Cert", 2)
        key = load_pem_private_key(original.key.encode(), password=None)
        check(spki(key.public_key()) == spki(leaf.public_key()), "GetUserCertificateDetail Key loads and is the leaf's")
        root = urllib.request.urlopen(f"http://{endpoint}/_sim/ca.pem", timeout=10).read().decode()
        strict_certs(root, "/_sim/ca.pem", 1)

        renewed = client.renew_certificate_order_for_package_request(
            cas.RenewCertificateOrderForPackageRequestRequest(order_id=www.order_id, csr=csr)
        )
        new_id = renewed.body.order_id
        check(isinstance(new_id, int) and new_id != www.order_id, f"renew with a CSR returns new OrderId {new_id}")
        states = []
        for _ in range(10):
            s = client.describe_certificate_state(cas.DescribeCertificateStateRequest(order_id=new_id)).body
            states.append(s.type)
            if s.type == "certificate":
                break
        check(states == ["payed", "process", "certificate"], f"renewal goes {states}")
        check(s.private_key in (None, ""), "no PrivateKey when we sent a CSR")
        check(s.certificate.count("BEGIN CERTIFICATE") == 2, "certificate comes with its chain")
        strict_certs(s.certificate, "renewed DescribeCertificateState Certificate", 2)
        detail = client.get_user_certificate_detail(cas.GetUserCertificateDetailRequest(cert_id=int(s.cert_id)))
        check(detail.body.order_id == new_id and "BEGIN CERTIFICATE" in detail.body.cert, "GetUserCertificateDetail parses")
        strict_certs(detail.body.cert, "renewed GetUserCertificateDetail Cert", 2)

    d = DnsClient(config(secret, algorithm))
    added = d.add_domain_record(dns.AddDomainRecordRequest(domain_name="example.com", rr=f"_dnsauth.sdk{checks}", type="TXT", value="token-1"))
    rid = added.body.record_id
    check(isinstance(rid, str) and rid, f"{label}: AddDomainRecord returns RecordId {rid}")
    sub = d.describe_sub_domain_records(dns.DescribeSubDomainRecordsRequest(sub_domain=f"_dnsauth.sdk{checks - 1}.example.com", type="TXT"))
    check(sub.body.total_count == 1 and sub.body.domain_records.record[0].value == "token-1", f"{label}: DescribeSubDomainRecords finds it")
    zone = d.describe_domain_records(dns.DescribeDomainRecordsRequest(domain_name="example.com"))
    check(any(x.record_id == rid for x in zone.body.domain_records.record), f"{label}: DescribeDomainRecords lists it")
    deleted = d.delete_domain_record(dns.DeleteDomainRecordRequest(record_id=rid))
    check(deleted.body.record_id == rid, f"{label}: DeleteDomainRecord")

    bad = CasClient(config("not-the-secret", algorithm))
    try:
        bad.list_user_certificate_order(cas.ListUserCertificateOrderRequest())
        check(False, f"{label}: wrong secret is refused")
    except Exception as e:  # the SDK raises its ClientException with .code
        code = getattr(e, "code", None) or ""
        check(code == "SignatureDoesNotMatch" or "SignatureDoesNotMatch" in str(e), f"{label}: wrong secret gets SignatureDoesNotMatch ({code})")

# A new application for a kind CAS does not renew, from the free quota.
client = CasClient(config(secret))
free = "digicert-free-1-free"
before = client.describe_package_state(cas.DescribePackageStateRequest(product_code=free)).body
check(
    before.product_code == free and before.total_count == 20 and before.used_count == 0 and isinstance(before.issued_count, int),
    f"DescribePackageState: {before.product_code} TotalCount {before.total_count} UsedCount {before.used_count} IssuedCount {before.issued_count}",
)
created = client.create_certificate_for_package_request(
    cas.CreateCertificateForPackageRequestRequest(
        product_code=free,
        csr=csr,
        domain="www.example.com",
        validate_type="DNS",
        tags=[cas.CreateCertificateForPackageRequestRequestTags(key="cas-renewd", value="sdk")],
    )
)
cid = created.body.order_id
check(isinstance(cid, int) and isinstance(created.body.request_id, str), f"CreateCertificateForPackageRequest returns OrderId {cid}")
after = client.describe_package_state(cas.DescribePackageStateRequest(product_code=free)).body
check(after.used_count == 1, f"the free quota counts it (UsedCount {after.used_count})")
listed = client.list_user_certificate_order(cas.ListUserCertificateOrderRequest(keyword="www.example.com")).body.certificate_order_list
new = next(o for o in listed if o.order_id == cid)
check(new.product_code == free and new.cert_type == "FREE", f"the new order is {new.product_code} / {new.cert_type}")
state = client.describe_certificate_state(cas.DescribeCertificateStateRequest(order_id=cid)).body
check(state.type in ("payed", "domain_verify", "process", "certificate"), f"the new order is followed like a renewal ({state.type})")

print(f"{checks} passed, 0 failed")
