#!/usr/bin/env bash
# Makes development certificates for the webhook server: a CA and a serving certificate with the
# IP SAN 127.0.0.1 (local runs, clientConfig.url) and the DNS names of the in-cluster Service.
#
#   webhook-certs/generate.sh [OUT_DIR] [SERVICE] [NAMESPACE]
#
# OUT_DIR (default webhook-certs/out, ignored by git) receives ca.crt, ca.key, tls.crt and
# tls.key: point `--webhook-cert-mode provided --webhook-cert-dir OUT_DIR` at it and use ca.crt
# as the caBundle. Re-running replaces the serving certificate (and keeps an existing CA), which
# a running controller-manager picks up without restart. Never commit the keys.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/out}
service=${2:-spiderpool-controller}
namespace=${3:-kube-system}
days=${WEBHOOK_CERT_DAYS:-365}
mkdir -p "$out"
umask 077
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ ! -s "$out/ca.key" ] || [ ! -s "$out/ca.crt" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$out/ca.key" -out "$out/ca.crt" -days 3650 -subj "/CN=spidernet.io" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi

cat >"$tmp/ext.cnf" <<CNF
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:spidernet.io,DNS:$service.$namespace.svc.cluster.local,DNS:$service.$namespace.svc,DNS:$service.$namespace,DNS:$service
CNF
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout "$tmp/tls.key" -out "$tmp/tls.csr" -subj "/CN=spidernet.io" 2>/dev/null
openssl x509 -req -in "$tmp/tls.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial \
  -CAserial "$tmp/ca.srl" -out "$tmp/tls.crt" -days "$days" -extfile "$tmp/ext.cnf" 2>/dev/null
# Replace the pair as atomically as a directory allows: key first, then the certificate (a
# watcher that reads a mismatched pair retries on its next tick).
mv -f "$tmp/tls.key" "$out/tls.key"
mv -f "$tmp/tls.crt" "$out/tls.crt"
echo "$out"
