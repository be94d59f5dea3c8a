"""The etcd API over TLS with client certificates: etcdctl with a certificate signed by the
cluster's CA gets in; without one, or with one from another CA, it does not."""

from __future__ import annotations

import os
import subprocess

from etcd_cluster import BackgroundCluster
from shoal.etcdapi import TLSFiles
from test_etcd_etcdctl import ensure_etcdctl
from test_net import make_pki


def test_etcdctl_over_mutual_tls(tmp_path):
    etcdctl = ensure_etcdctl()
    pki = make_pki(tmp_path, "etcd-ca", {"server": 1, "client": None})
    rogue = make_pki(tmp_path, "rogue-ca", {"intruder": None})
    srv = pki["server"]
    c = BackgroundCluster(tmp_path / "data", n=1, fsync=False,
                          tls=TLSFiles(srv.cert_file, srv.key_file, srv.ca_file)).start()
    try:
        ep = f"https://{c.endpoints[0]}"
        env = dict(os.environ, ETCDCTL_API="3")

        def ctl(tls, *args):
            flags = [f"--cacert={pki['client'].ca_file}"]
            if tls is not None:
                flags += [f"--cert={tls.cert_file}", f"--key={tls.key_file}"]
            return subprocess.run([etcdctl, f"--endpoints={ep}", "--dial-timeout=2s",
                                   "--command-timeout=4s", *flags, *args],
                                  capture_output=True, text=True, env=env, timeout=30)

        assert ctl(pki["client"], "put", "tls/k", "v").returncode == 0
        assert ctl(pki["client"], "get", "tls/k").stdout.split() == ["tls/k", "v"]
        assert ctl(None, "get", "tls/k").returncode != 0
        assert ctl(rogue["intruder"], "get", "tls/k").returncode != 0
        out = ctl(pki["client"], "member", "list").stdout
        assert f"https://127.0.0.1:{c.etcd_ports[1]}" in out
    finally:
        c.stop()
