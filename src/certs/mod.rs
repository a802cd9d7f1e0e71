//! Certificates: parsing `kubernetes.io/tls` Secrets and PEM files into rustls keys, checking which hosts a
//! certificate covers, and the default self-signed certificate.
