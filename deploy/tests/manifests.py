"""What the compose and Kubernetes tests share: applying `VEIL_*`
environment overrides to a TOML config the way the broker does, the files a
config names, and certificate names and SANs."""
import tomllib

from cryptography import x509
from cryptography.x509.oid import NameOID


def override(config, env):
    """`VEIL_A__B__0__C=v` sets config["a"]["b"][0]["c"] (values as the
    broker reads them: TOML scalars where they parse, else strings)."""
    for key, raw in env.items():
        if not key.startswith("VEIL_"):
            continue
        path = key[len("VEIL_"):].lower().split("__")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        cur = config
        for i, part in enumerate(path[:-1]):
            nxt = path[i + 1]
            if isinstance(cur, list):
                cur = cur[int(part)]
                continue
            cur = cur.setdefault(part, [] if nxt.isdigit() else {})
        last = path[-1]
        if isinstance(cur, list):
            cur[int(last)] = value
        else:
            cur[last] = value
    return config


def named_files(config):
    """Every path under a key ending in `_file`."""
    out = []

    def walk(v):
        if isinstance(v, dict):
            for k, x in v.items():
                if k.endswith("_file") and isinstance(x, str):
                    out.append(x)
                else:
                    walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
    walk(config)
    return out


def certificate(path):
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def common_name(cert):
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def dns_names(cert):
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return set(ext.value.get_values_for_type(x509.DNSName))


def shutdown_budget_s(config):
    """How long `veil broker` may take after SIGTERM: leaderships move (15 s
    at most), connections drain, background tasks stop (each bounded by
    network.shutdown_timeout_ms), then partitions are fsynced."""
    timeout = config.get("network", {}).get("shutdown_timeout_ms", 30_000) / 1000
    return 15 + 2 * timeout
