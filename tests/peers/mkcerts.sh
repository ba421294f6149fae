#!/bin/sh
# mkcerts.sh DIR - throwaway TLS material for the loopback test peers (never committed).
#
# Writes into DIR (created if missing), every key EC P-256, every file PEM:
#   ca.pem                      the test trust anchor (pass as ca_file)
#   good.pem      good.key      leaf for IP:127.0.0.1, IP:::1, DNS:localhost, signed by ca
#   wronghost.pem wronghost.key leaf for DNS:wrong.example, IP:192.0.2.1 only, signed by ca
#   expired.pem   expired.key   leaf for the right names, signed by ca, expired in 2020
#   untrusted.pem untrusted.key leaf for the right names, signed by another CA (evilca.pem)
#   NAME.pub                    the public key of each leaf (for CURLOPT_PINNEDPUBLICKEY)
# Uses the openssl CLI ($OPENSSL, default openssl). Exit status 0 on success.
set -eu
test $# -eq 1 || { echo "usage: $0 DIR" >&2; exit 2; }
dir=$1
ossl=${OPENSSL:-openssl}
mkdir -p "$dir"
cd "$dir"
umask 077

key() { "$ossl" genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

ca() { # name, subject
    key "$1.key"
    "$ossl" req -new -x509 -key "$1.key" -out "$1.pem" -days 30 -subj "$2" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}

good_san="subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost"
leaf_ext="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth"

leaf() { # name, issuing CA, SAN line
    key "$1.key"
    "$ossl" req -new -key "$1.key" -out "$1.csr" -subj "/CN=ferry test $1" 2>/dev/null
    printf '%s\n%s\n' "$leaf_ext" "$3" > "$1.ext"
    "$ossl" x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial \
        -days 30 -extfile "$1.ext" -out "$1.pem" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}

ca ca "/CN=ferry test CA"
ca evilca "/CN=ferry untrusted test CA"
leaf good ca "$good_san"
leaf wronghost ca "subjectAltName=DNS:wrong.example,IP:192.0.2.1"
leaf untrusted evilca "$good_san"

# An expired leaf: `openssl x509 -req` in OpenSSL 3.0 cannot back-date, `openssl ca` can.
key expired.key
"$ossl" req -new -key expired.key -out expired.csr -subj "/CN=ferry test expired" 2>/dev/null
mkdir -p ca.db
: > ca.db/index.txt
echo 01 > ca.db/serial
cat > ca.db/ca.cnf <<EOF
[ ca ]
default_ca = test
[ test ]
database = $PWD/ca.db/index.txt
serial = $PWD/ca.db/serial
new_certs_dir = $PWD/ca.db
default_md = sha256
policy = anything
unique_subject = no
copy_extensions = none
x509_extensions = leaf
[ anything ]
commonName = supplied
[ leaf ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
$good_san
EOF
"$ossl" ca -batch -config ca.db/ca.cnf -cert ca.pem -keyfile ca.key -in expired.csr \
    -out expired.pem -startdate 20200101000000Z -enddate 20200102000000Z -notext 2>/dev/null
rm -rf ca.db expired.csr ca.srl evilca.srl
# Public keys of the leaves, so a test helper can pin its own peer whatever the certificate.
for n in good wronghost expired untrusted; do
    "$ossl" pkey -in "$n.key" -pubout -out "$n.pub" 2>/dev/null
done
chmod 644 ./*.pem
