//! TLS for the COPY connections (rustls with the ring provider), with libpq's `sslmode`
//! meanings: `require` encrypts without checking the server's certificate (as libpq does
//! when no root certificate is configured), `verify-ca` checks the chain against
//! `sslrootcert`, `verify-full` also checks the host name. A client certificate and key
//! (PEM) are sent when given.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{
    ring, verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use super::errors::Error;

/// libpq's TLS modes that encrypt (the caller handles `disable`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Require,
    VerifyCa,
    VerifyFull,
}

impl Mode {
    pub fn parse(text: &str) -> Result<Mode, Error> {
        match text {
            "require" => Ok(Mode::Require),
            "verify-ca" => Ok(Mode::VerifyCa),
            "verify-full" => Ok(Mode::VerifyFull),
            other => Err(Error::Usage(format!(
                "TLS mode {other:?}: expected require, verify-ca or verify-full"
            ))),
        }
    }
}

/// What a TLS connection needs: the mode and the PEM files' paths.
#[derive(Clone, Debug)]
pub struct Settings {
    pub mode: Mode,
    pub root_cert: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

fn connect_error(what: &str, path: &str, e: impl std::fmt::Display) -> Error {
    Error::Connect(format!("could not read the {what} {path:?}: {e}"))
}

/// The rustls client configuration for `settings`.
pub fn client_config(settings: &Settings) -> Result<ClientConfig, Error> {
    let provider = Arc::new(ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Connect(format!("TLS setup failed: {e}")))?;
    let algorithms = provider.signature_verification_algorithms;
    let verifier: Arc<dyn ServerCertVerifier> = match settings.mode {
        Mode::Require => Arc::new(Lenient {
            algorithms,
            chain: None,
        }),
        Mode::VerifyCa | Mode::VerifyFull => {
            let path = settings.root_cert.as_deref().ok_or_else(|| {
                Error::Connect(
                    "sslmode verify-ca/verify-full needs a root certificate (sslrootcert)".into(),
                )
            })?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path)
                .map_err(|e| connect_error("root certificate", path, e))?
            {
                let cert = cert.map_err(|e| connect_error("root certificate", path, e))?;
                roots
                    .add(cert)
                    .map_err(|e| connect_error("root certificate", path, e))?;
            }
            if roots.is_empty() {
                return Err(connect_error(
                    "root certificate",
                    path,
                    "no certificate in it",
                ));
            }
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| Error::Connect(format!("TLS setup failed: {e}")))?;
            if settings.mode == Mode::VerifyFull {
                webpki
            } else {
                Arc::new(Lenient {
                    algorithms,
                    chain: Some(webpki),
                })
            }
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match (&settings.cert, &settings.key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| connect_error("client certificate", cert, e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| connect_error("client certificate", cert, e))?;
            let key_der = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| connect_error("client key", key, e))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| Error::Connect(format!("the client certificate is not usable: {e}")))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// `require` (`chain` None): any certificate; `verify-ca`: the chain must lead to a
/// trusted root, the name is not checked. The handshake signatures are always checked,
/// with the provider's algorithms (those `WebPkiServerVerifier` checks them with).
#[derive(Debug)]
struct Lenient {
    algorithms: WebPkiSupportedAlgorithms,
    chain: Option<Arc<WebPkiServerVerifier>>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_missing_files_are_clear_errors() {
        assert_eq!(Mode::parse("verify-ca").unwrap(), Mode::VerifyCa);
        assert!(Mode::parse("prefer").is_err());
        let require = Settings {
            mode: Mode::Require,
            root_cert: None,
            cert: None,
            key: None,
        };
        assert!(client_config(&require).is_ok());
        let missing = Settings {
            mode: Mode::VerifyFull,
            root_cert: None,
            ..require.clone()
        };
        assert!(
            matches!(client_config(&missing), Err(Error::Connect(m)) if m.contains("sslrootcert"))
        );
        let unreadable = Settings {
            mode: Mode::VerifyCa,
            root_cert: Some("/nonexistent/root.crt".into()),
            ..require
        };
        assert!(
            matches!(client_config(&unreadable), Err(Error::Connect(m)) if m.contains("/nonexistent/root.crt"))
        );
    }
}
