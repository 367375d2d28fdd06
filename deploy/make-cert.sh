#!/bin/sh
# The proxy's certificate: make a self-signed one on first start, keep any that is there.
# docker-compose.yml runs it once (service proxy-certs) before the proxy starts.
#
#   CERT_DIR        where tls.crt and tls.key live (the proxy-certs volume)
#   CERT_HOSTNAME   the name phones reach the proxy at (the certificate's subjectAltName)
#
# To serve a real certificate instead, put its chain in tls.crt and its key in tls.key
# in that volume (docs/deploy.md); this script then changes nothing.
set -eu

CERT_DIR="${CERT_DIR:-/certs}"
CERT_HOSTNAME="${CERT_HOSTNAME:-localhost}"
crt="$CERT_DIR/tls.crt"
key="$CERT_DIR/tls.key"

if [ -s "$crt" ] && [ -s "$key" ]; then
    echo "proxy-certs: keeping the certificate in $CERT_DIR"
    openssl x509 -in "$crt" -noout -subject -enddate
    exit 0
fi

case "$CERT_HOSTNAME" in
*[!A-Za-z0-9.-]*)
    san="IP:$CERT_HOSTNAME"  # an address such as 192.0.2.7 or 2001:db8::7
    case "$CERT_HOSTNAME" in *[!0-9A-Fa-f.:]*)
        echo "proxy-certs: CERT_HOSTNAME=$CERT_HOSTNAME is neither a host name nor an address" >&2
        exit 2
        ;;
    esac
    ;;
*[!0-9.]*) san="DNS:$CERT_HOSTNAME" ;;
*) san="IP:$CERT_HOSTNAME" ;;
esac

echo "proxy-certs: no certificate in $CERT_DIR; making a self-signed one for $CERT_HOSTNAME"
umask 077
mkdir -p "$CERT_DIR"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 \
    -subj "/CN=$CERT_HOSTNAME" -addext "subjectAltName=$san" \
    -keyout "$key.new" -out "$crt.new"
chmod 0644 "$crt.new"
mv "$key.new" "$key"
mv "$crt.new" "$crt"
openssl x509 -in "$crt" -noout -subject -enddate
