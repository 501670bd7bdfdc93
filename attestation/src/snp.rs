//! The SEV-SNP `ATTESTATION_REPORT` (AMD SEV-SNP ABI specification, "Attestation Report", 1184
//! bytes, little-endian), parsed into typed fields and written back byte for byte, and the claims
//! governance derives from it (the reference's `SnpAttestationClaims.ts`).
//!
//! No I/O here: [`SnpReport::parse`] takes a byte slice and [`SnpReport::to_bytes`] returns one.
//! The areas the ABI marks reserved are kept as they came (not checked), so a report parsed and
//! written again is the same bytes (the signature covers them). What is checked: the length, the
//! version (2…5), the signature algorithm (1 = ECDSA P-384 with SHA-384), the VMPL (0…3) and the
//! policy's bit 17, which the ABI requires to be one.

use serde_json::{Map, Value};

/// Size of a report.
pub const REPORT_LEN: usize = 0x4A0;
/// The signed part of a report: bytes `0..0x2A0`.
pub const SIGNED_LEN: usize = 0x2A0;
/// Size of each signature component (r, s): 72 bytes, little-endian, zero-extended from 48.
pub const SIGNATURE_COMPONENT_LEN: usize = 72;
/// Size of a P-384 scalar.
pub const P384_SCALAR_LEN: usize = 48;
/// `SIGNATURE_ALGO` 1: ECDSA P-384 with SHA-384 (the only one the ABI defines).
pub const SIGNATURE_ALGO_ECDSA_P384_SHA384: u32 = 1;
/// The report versions this parser reads (2: original, 3: CPUID fields, 5: mitigation vectors).
pub const SUPPORTED_VERSIONS: std::ops::RangeInclusive<u32> = 2..=5;
/// Guest policy bit 16: SMT allowed.
pub const POLICY_SMT: u64 = 1 << 16;
/// Guest policy bit 17: reserved, must be one.
pub const POLICY_RESERVED_ONE: u64 = 1 << 17;
/// Guest policy bit 18: a migration agent may be associated.
pub const POLICY_MIGRATE_MA: u64 = 1 << 18;
/// Guest policy bit 19: debugging allowed (`x-ms-sevsnpvm-is-debuggable`).
pub const POLICY_DEBUG: u64 = 1 << 19;
/// Guest policy bit 20: single socket only.
pub const POLICY_SINGLE_SOCKET: u64 = 1 << 20;

/// Why bytes are not an SNP report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnpReportError {
    /// The report is not 1184 bytes.
    #[error("an SNP attestation report is {REPORT_LEN} bytes, this one is {actual}")]
    Length {
        /// The length given.
        actual: usize,
    },
    /// The `VERSION` field is not one this parser reads.
    #[error("SNP report version {0} is not supported (2 to 5 are)")]
    Version(u32),
    /// The `SIGNATURE_ALGO` field is not ECDSA P-384 with SHA-384.
    #[error("SNP report signature algorithm {0} is not supported (1 = ECDSA P-384 SHA-384 is)")]
    SignatureAlgorithm(u32),
    /// The `VMPL` field is above 3.
    #[error("SNP report VMPL {0} is out of range (0 to 3)")]
    Vmpl(u32),
    /// The guest policy's bit 17, which must be one, is zero.
    #[error("SNP report policy {0:#x} has bit 17 clear (the ABI requires it set)")]
    PolicyReservedBit(u64),
    /// A signature component does not fit P-384 (its bytes above 48 are not zero).
    #[error("SNP report signature component {component} is wider than 48 bytes")]
    SignatureComponent {
        /// `r` or `s`.
        component: &'static str,
    },
}

/// A TCB version (`CURRENT_TCB`, `REPORTED_TCB`, …): security version numbers of the firmware
/// parts, one byte each (Milan/Genoa layout: boot loader, TEE, reserved ×4, SNP, microcode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TcbVersion(pub u64);

impl TcbVersion {
    /// From its parts (Milan/Genoa layout).
    pub fn new(bootloader: u8, tee: u8, snp: u8, microcode: u8) -> Self {
        Self(
            u64::from(bootloader)
                | (u64::from(tee) << 8)
                | (u64::from(snp) << 48)
                | (u64::from(microcode) << 56),
        )
    }
    /// The boot loader SVN (byte 0).
    pub fn bootloader(self) -> u8 {
        self.0.to_le_bytes()[0]
    }
    /// The PSP OS (TEE) SVN (byte 1).
    pub fn tee(self) -> u8 {
        self.0.to_le_bytes()[1]
    }
    /// The SNP firmware SVN (byte 6).
    pub fn snp(self) -> u8 {
        self.0.to_le_bytes()[6]
    }
    /// The microcode SVN (byte 7).
    pub fn microcode(self) -> u8 {
        self.0.to_le_bytes()[7]
    }
    /// The 16 hex digits of the little-endian bytes (the form of `endorsed_tcb`).
    pub fn to_hex(self) -> String {
        hex(&self.0.to_le_bytes())
    }
}

/// An `ATTESTATION_REPORT`, every field of the ABI, reserved areas kept raw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnpReport {
    /// 0x00 `VERSION`.
    pub version: u32,
    /// 0x04 `GUEST_SVN`.
    pub guest_svn: u32,
    /// 0x08 `POLICY` (bits: [`POLICY_DEBUG`], [`POLICY_SMT`], …).
    pub policy: u64,
    /// 0x10 `FAMILY_ID`.
    pub family_id: [u8; 16],
    /// 0x20 `IMAGE_ID`.
    pub image_id: [u8; 16],
    /// 0x30 `VMPL`.
    pub vmpl: u32,
    /// 0x34 `SIGNATURE_ALGO`.
    pub signature_algo: u32,
    /// 0x38 `CURRENT_TCB`.
    pub current_tcb: TcbVersion,
    /// 0x40 `PLATFORM_INFO` (bit 0 SMT enabled, bit 1 TSME enabled, …).
    pub platform_info: u64,
    /// 0x48 flags: bit 0 `AUTHOR_KEY_EN`, bit 1 `MASK_CHIP_KEY`, bits 2–4 `SIGNING_KEY`
    /// (0 = VCEK, 1 = VLEK).
    pub flags: u32,
    /// 0x4C reserved.
    pub reserved_4c: [u8; 4],
    /// 0x50 `REPORT_DATA`: the guest's 64 bytes.
    pub report_data: [u8; 64],
    /// 0x90 `MEASUREMENT`: the launch digest.
    pub measurement: [u8; 48],
    /// 0xC0 `HOST_DATA`: in Azure container instances, SHA-256 of the security policy.
    pub host_data: [u8; 32],
    /// 0xE0 `ID_KEY_DIGEST`.
    pub id_key_digest: [u8; 48],
    /// 0x110 `AUTHOR_KEY_DIGEST`.
    pub author_key_digest: [u8; 48],
    /// 0x140 `REPORT_ID`.
    pub report_id: [u8; 32],
    /// 0x160 `REPORT_ID_MA`.
    pub report_id_ma: [u8; 32],
    /// 0x180 `REPORTED_TCB`.
    pub reported_tcb: TcbVersion,
    /// 0x188..0x1A0: `CPUID_FAM_ID`, `CPUID_MOD_ID`, `CPUID_STEP` (version 3+) then reserved.
    pub cpuid_and_reserved: [u8; 24],
    /// 0x1A0 `CHIP_ID` (zeros when `MASK_CHIP_KEY`).
    pub chip_id: [u8; 64],
    /// 0x1E0 `COMMITTED_TCB`.
    pub committed_tcb: TcbVersion,
    /// 0x1E8 `CURRENT_BUILD`, `CURRENT_MINOR`, `CURRENT_MAJOR`, reserved.
    pub current_version: [u8; 4],
    /// 0x1EC `COMMITTED_BUILD`, `COMMITTED_MINOR`, `COMMITTED_MAJOR`, reserved.
    pub committed_version: [u8; 4],
    /// 0x1F0 `LAUNCH_TCB`.
    pub launch_tcb: TcbVersion,
    /// 0x1F8..0x2A0: reserved (version 5 puts mitigation vectors here).
    pub reserved_1f8: [u8; 0x2A0 - 0x1F8],
    /// 0x2A0 signature `R`, 72 bytes little-endian.
    pub signature_r: [u8; SIGNATURE_COMPONENT_LEN],
    /// 0x2E8 signature `S`, 72 bytes little-endian.
    pub signature_s: [u8; SIGNATURE_COMPONENT_LEN],
    /// 0x330..0x4A0: the rest of the signature area, reserved.
    pub reserved_signature: [u8; REPORT_LEN - 0x330],
}

fn array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(array(bytes, at))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(array(bytes, at))
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Bytes from hex (either case); `None` for an odd length or a non-hex digit.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

impl SnpReport {
    /// Parses a report, checking its length and the fields listed in the module comment.
    ///
    /// # Errors
    /// [`SnpReportError`] naming the field.
    pub fn parse(bytes: &[u8]) -> Result<Self, SnpReportError> {
        if bytes.len() != REPORT_LEN {
            return Err(SnpReportError::Length {
                actual: bytes.len(),
            });
        }
        let report = Self {
            version: u32_at(bytes, 0x00),
            guest_svn: u32_at(bytes, 0x04),
            policy: u64_at(bytes, 0x08),
            family_id: array(bytes, 0x10),
            image_id: array(bytes, 0x20),
            vmpl: u32_at(bytes, 0x30),
            signature_algo: u32_at(bytes, 0x34),
            current_tcb: TcbVersion(u64_at(bytes, 0x38)),
            platform_info: u64_at(bytes, 0x40),
            flags: u32_at(bytes, 0x48),
            reserved_4c: array(bytes, 0x4C),
            report_data: array(bytes, 0x50),
            measurement: array(bytes, 0x90),
            host_data: array(bytes, 0xC0),
            id_key_digest: array(bytes, 0xE0),
            author_key_digest: array(bytes, 0x110),
            report_id: array(bytes, 0x140),
            report_id_ma: array(bytes, 0x160),
            reported_tcb: TcbVersion(u64_at(bytes, 0x180)),
            cpuid_and_reserved: array(bytes, 0x188),
            chip_id: array(bytes, 0x1A0),
            committed_tcb: TcbVersion(u64_at(bytes, 0x1E0)),
            current_version: array(bytes, 0x1E8),
            committed_version: array(bytes, 0x1EC),
            launch_tcb: TcbVersion(u64_at(bytes, 0x1F0)),
            reserved_1f8: array(bytes, 0x1F8),
            signature_r: array(bytes, 0x2A0),
            signature_s: array(bytes, 0x2E8),
            reserved_signature: array(bytes, 0x330),
        };
        report.check()?;
        Ok(report)
    }

    /// The field checks of [`SnpReport::parse`].
    ///
    /// # Errors
    /// [`SnpReportError`] naming the field.
    pub fn check(&self) -> Result<(), SnpReportError> {
        if !SUPPORTED_VERSIONS.contains(&self.version) {
            return Err(SnpReportError::Version(self.version));
        }
        if self.signature_algo != SIGNATURE_ALGO_ECDSA_P384_SHA384 {
            return Err(SnpReportError::SignatureAlgorithm(self.signature_algo));
        }
        if self.vmpl > 3 {
            return Err(SnpReportError::Vmpl(self.vmpl));
        }
        if self.policy & POLICY_RESERVED_ONE == 0 {
            return Err(SnpReportError::PolicyReservedBit(self.policy));
        }
        for (component, bytes) in [("r", &self.signature_r), ("s", &self.signature_s)] {
            if bytes[P384_SCALAR_LEN..].iter().any(|b| *b != 0) {
                return Err(SnpReportError::SignatureComponent { component });
            }
        }
        Ok(())
    }

    /// The report's 1184 bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(REPORT_LEN);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.guest_svn.to_le_bytes());
        out.extend_from_slice(&self.policy.to_le_bytes());
        out.extend_from_slice(&self.family_id);
        out.extend_from_slice(&self.image_id);
        out.extend_from_slice(&self.vmpl.to_le_bytes());
        out.extend_from_slice(&self.signature_algo.to_le_bytes());
        out.extend_from_slice(&self.current_tcb.0.to_le_bytes());
        out.extend_from_slice(&self.platform_info.to_le_bytes());
        out.extend_from_slice(&self.flags.to_le_bytes());
        out.extend_from_slice(&self.reserved_4c);
        out.extend_from_slice(&self.report_data);
        out.extend_from_slice(&self.measurement);
        out.extend_from_slice(&self.host_data);
        out.extend_from_slice(&self.id_key_digest);
        out.extend_from_slice(&self.author_key_digest);
        out.extend_from_slice(&self.report_id);
        out.extend_from_slice(&self.report_id_ma);
        out.extend_from_slice(&self.reported_tcb.0.to_le_bytes());
        out.extend_from_slice(&self.cpuid_and_reserved);
        out.extend_from_slice(&self.chip_id);
        out.extend_from_slice(&self.committed_tcb.0.to_le_bytes());
        out.extend_from_slice(&self.current_version);
        out.extend_from_slice(&self.committed_version);
        out.extend_from_slice(&self.launch_tcb.0.to_le_bytes());
        out.extend_from_slice(&self.reserved_1f8);
        out.extend_from_slice(&self.signature_r);
        out.extend_from_slice(&self.signature_s);
        out.extend_from_slice(&self.reserved_signature);
        debug_assert_eq!(out.len(), REPORT_LEN);
        out
    }

    /// A report with every field zero except the ones a valid report needs (version 2,
    /// ECDSA P-384, policy bit 17): the base the virtual authority fills in.
    pub fn template() -> Self {
        let mut bytes = vec![0u8; REPORT_LEN];
        bytes[0] = 2;
        bytes[0x34] = 1;
        bytes[0x08..0x10].copy_from_slice(&POLICY_RESERVED_ONE.to_le_bytes());
        Self::parse(&bytes).expect("the template is a valid report")
    }

    /// Whether the guest policy allows debugging (bit 19).
    pub fn is_debuggable(&self) -> bool {
        self.policy & POLICY_DEBUG != 0
    }

    /// The signature as the fixed-width big-endian `r ‖ s` (96 bytes) that
    /// `ECDSA_P384_SHA384_FIXED` verifies.
    pub fn signature_fixed(&self) -> [u8; 2 * P384_SCALAR_LEN] {
        let mut out = [0u8; 2 * P384_SCALAR_LEN];
        for (half, component) in [&self.signature_r, &self.signature_s].into_iter().enumerate() {
            for i in 0..P384_SCALAR_LEN {
                out[half * P384_SCALAR_LEN + i] = component[P384_SCALAR_LEN - 1 - i];
            }
        }
        out
    }

    /// Sets the signature from the fixed-width big-endian `r ‖ s` (96 bytes).
    pub fn set_signature_fixed(&mut self, fixed: &[u8; 2 * P384_SCALAR_LEN]) {
        for (half, component) in [&mut self.signature_r, &mut self.signature_s]
            .into_iter()
            .enumerate()
        {
            *component = [0u8; SIGNATURE_COMPONENT_LEN];
            for i in 0..P384_SCALAR_LEN {
                component[i] = fixed[half * P384_SCALAR_LEN + P384_SCALAR_LEN - 1 - i];
            }
        }
    }

    /// The claims CGS derives from a raw report (AC `SnpAttestationClaims.ts`), exactly those:
    /// `x-ms-ver` (string), `x-ms-sevsnpvm-guestsvn` (number), `-smt-allowed`,
    /// `-is-debuggable` (bools from the policy), `-familyId`, `-imageId`, `-vmpl` (number),
    /// `-reportdata`, `-launchmeasurement`, `-hostdata`, `-idkeydigest`, `-authorkeydigest`,
    /// `-reportid` (hex), `signature-r`, `signature-s` (hex of the 72-byte fields).
    pub fn claims(&self) -> Map<String, Value> {
        let mut claims = Map::new();
        let mut put = |name: &str, value: Value| {
            claims.insert(name.to_owned(), value);
        };
        put("x-ms-ver", Value::String(self.version.to_string()));
        put("x-ms-sevsnpvm-guestsvn", Value::from(self.guest_svn));
        put(
            "x-ms-sevsnpvm-smt-allowed",
            Value::Bool(self.policy & POLICY_SMT != 0),
        );
        put(
            "x-ms-sevsnpvm-is-debuggable",
            Value::Bool(self.is_debuggable()),
        );
        put("x-ms-sevsnpvm-familyId", hex(&self.family_id).into());
        put("x-ms-sevsnpvm-imageId", hex(&self.image_id).into());
        put("x-ms-sevsnpvm-vmpl", Value::from(self.vmpl));
        put("x-ms-sevsnpvm-reportdata", hex(&self.report_data).into());
        put(
            "x-ms-sevsnpvm-launchmeasurement",
            hex(&self.measurement).into(),
        );
        put("x-ms-sevsnpvm-hostdata", hex(&self.host_data).into());
        put("x-ms-sevsnpvm-idkeydigest", hex(&self.id_key_digest).into());
        put(
            "x-ms-sevsnpvm-authorkeydigest",
            hex(&self.author_key_digest).into(),
        );
        put("x-ms-sevsnpvm-reportid", hex(&self.report_id).into());
        put("signature-r", hex(&self.signature_r).into());
        put("signature-s", hex(&self.signature_s).into());
        claims
    }
}

/// Fuzz hook: parses arbitrary bytes; a report that parses must write back as the same bytes.
#[doc(hidden)]
pub fn fuzz_parse(data: &[u8]) {
    if let Ok(report) = SnpReport::parse(data) {
        assert_eq!(report.to_bytes(), data, "a parsed report writes back unchanged");
        let _ = report.claims();
        let _ = report.signature_fixed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CACI_REPORT: &[u8] =
        include_bytes!("../tests/vectors/caci-insecure-virtual/report.bin");

    #[test]
    fn the_reference_caci_report_parses_with_its_known_fields() {
        let report = SnpReport::parse(CACI_REPORT).unwrap();
        assert_eq!(report.version, 3);
        assert_eq!(report.policy, 0x3001f);
        assert!(!report.is_debuggable());
        let claims = report.claims();
        assert_eq!(
            claims["x-ms-sevsnpvm-hostdata"],
            "73973b78d70cc68353426de188db5dfc57e5b766e399935fb73a61127ea26d20"
        );
        assert_eq!(claims["x-ms-sevsnpvm-is-debuggable"], false);
        assert_eq!(claims["x-ms-sevsnpvm-smt-allowed"], true);
        assert_eq!(claims["x-ms-ver"], "3");
        assert_eq!(claims["x-ms-sevsnpvm-vmpl"], 0);
        assert!(
            claims["x-ms-sevsnpvm-reportdata"]
                .as_str()
                .unwrap()
                .ends_with(&"0".repeat(64))
        );
        assert_eq!(report.to_bytes(), CACI_REPORT);
    }

    #[test]
    fn every_bad_length_and_field_is_named() {
        assert_eq!(
            SnpReport::parse(&CACI_REPORT[..REPORT_LEN - 1]),
            Err(SnpReportError::Length {
                actual: REPORT_LEN - 1
            })
        );
        assert_eq!(
            SnpReport::parse(&[]),
            Err(SnpReportError::Length { actual: 0 })
        );
        let mut long = CACI_REPORT.to_vec();
        long.push(0);
        assert!(matches!(
            SnpReport::parse(&long),
            Err(SnpReportError::Length { .. })
        ));
        let patched = |at: usize, value: &[u8]| {
            let mut bytes = CACI_REPORT.to_vec();
            bytes[at..at + value.len()].copy_from_slice(value);
            SnpReport::parse(&bytes)
        };
        assert_eq!(patched(0, &[1, 0, 0, 0]), Err(SnpReportError::Version(1)));
        assert_eq!(patched(0, &[6, 0, 0, 0]), Err(SnpReportError::Version(6)));
        assert_eq!(
            patched(0x34, &[2, 0, 0, 0]),
            Err(SnpReportError::SignatureAlgorithm(2))
        );
        assert_eq!(patched(0x30, &[4, 0, 0, 0]), Err(SnpReportError::Vmpl(4)));
        assert_eq!(
            patched(0x08, &[0x1f, 0, 0x01, 0]),
            Err(SnpReportError::PolicyReservedBit(0x1001f))
        );
        assert_eq!(
            patched(0x2A0 + 48, &[1]),
            Err(SnpReportError::SignatureComponent { component: "r" })
        );
        assert_eq!(
            patched(0x2E8 + 71, &[1]),
            Err(SnpReportError::SignatureComponent { component: "s" })
        );
    }

    #[test]
    fn debug_comes_from_policy_bit_19() {
        let mut report = SnpReport::template();
        assert_eq!(report.claims()["x-ms-sevsnpvm-is-debuggable"], false);
        report.policy |= POLICY_DEBUG;
        assert_eq!(report.claims()["x-ms-sevsnpvm-is-debuggable"], true);
        assert_eq!(report.claims().len(), 16);
    }

    #[test]
    fn the_signature_converts_between_little_endian_and_fixed_form() {
        let mut report = SnpReport::template();
        let fixed: [u8; 96] = std::array::from_fn(|i| i as u8 + 1);
        report.set_signature_fixed(&fixed);
        assert_eq!(report.signature_r[0], 48);
        assert_eq!(report.signature_r[47], 1);
        assert_eq!(report.signature_s[0], 96);
        assert_eq!(report.signature_fixed(), fixed);
        assert_eq!(
            SnpReport::parse(&report.to_bytes()).unwrap().signature_fixed(),
            fixed
        );
    }

    #[test]
    fn tcb_versions_split_into_their_svns() {
        let tcb = TcbVersion::new(3, 0, 8, 115);
        assert_eq!(
            (tcb.bootloader(), tcb.tee(), tcb.snp(), tcb.microcode()),
            (3, 0, 8, 115)
        );
        assert_eq!(tcb.to_hex(), "0300000000000873");
        assert_eq!(from_hex("0aFf"), Some(vec![0x0a, 0xff]));
        assert_eq!(from_hex("0"), None);
        assert_eq!(from_hex("zz"), None);
    }

    fn valid_report() -> impl Strategy<Value = Vec<u8>> {
        (
            proptest::collection::vec(any::<u8>(), REPORT_LEN),
            2u32..=5,
            0u32..=3,
            any::<u64>(),
        )
            .prop_map(|(mut bytes, version, vmpl, policy)| {
                bytes[0..4].copy_from_slice(&version.to_le_bytes());
                bytes[0x30..0x34].copy_from_slice(&vmpl.to_le_bytes());
                bytes[0x34..0x38].copy_from_slice(&1u32.to_le_bytes());
                bytes[0x08..0x10].copy_from_slice(&(policy | POLICY_RESERVED_ONE).to_le_bytes());
                bytes[0x2A0 + 48..0x2A0 + 72].fill(0);
                bytes[0x2E8 + 48..0x2E8 + 72].fill(0);
                bytes
            })
    }

    proptest! {
        #[test]
        fn a_valid_report_round_trips(bytes in valid_report()) {
            let report = SnpReport::parse(&bytes).unwrap();
            prop_assert_eq!(report.to_bytes(), bytes.clone());
            prop_assert_eq!(SnpReport::parse(&report.to_bytes()).unwrap(), report.clone());
            prop_assert_eq!(
                report.claims()["x-ms-sevsnpvm-hostdata"].as_str().unwrap(),
                hex(&bytes[0xC0..0xE0])
            );
        }

        #[test]
        fn any_bytes_parse_or_fail_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1300)) {
            fuzz_parse(&bytes);
        }
    }
}
