//! The update manifest: the envelope parser and signature check (any bytes
//! as a `PUT /update/manifest` body), and the manifest parser and checks
//! (any bytes as the signed manifest JSON) with a sign/verify round trip.
#![no_main]

use krazy_update::protocol::{Manifest, PublicKey, SecretKey, SignedManifest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = SecretKey::from_seed([7; 32]);
    let public = key.public();
    if let Ok(envelope) = SignedManifest::from_json(data) {
        if let Ok(m) = envelope.verify(&public) {
            assert!(m.check().is_ok());
        }
        // Another key never accepts what this one signed, nor forgeries.
        assert!(envelope.verify(&PublicKey([9; 32])).is_err());
    }
    if let Ok(m) = serde_json::from_slice::<Manifest>(data) {
        let signed = SignedManifest::sign(&m, &key);
        let back = SignedManifest::from_json(&signed.to_json()).map(|e| e.verify(&public));
        match back {
            Ok(Ok(v)) => assert_eq!(v, m),
            Ok(Err(_)) => assert!(m.check().is_err()),
            Err(_) => {}
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(k) = PublicKey::from_text(text) {
            assert_eq!(PublicKey::from_text(&k.to_text()), Ok(k));
        }
    }
});
