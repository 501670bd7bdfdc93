//! The one error type of the governance state machine: an HTTP status, a CCF / CGS error code and a
//! message, serialised as the reference's body `{"error":{"code":…,"message":…}}`.
//!
//! Every code is the reference's spelling (CCF `ccf::errors`, CGS `ErrorResponse.ts`); each carries
//! the status the reference answers with by default. The few places where CCF answers one code with
//! two statuses (`InvalidAuthenticationInfo` is 401 from the COSE layer and 400 for a path that does
//! not match the signer) use [`ApiError::with_status`]. The HTTP layer maps an `ApiError` to a
//! response in exactly one place: [`ApiError::status`] plus [`ApiError::body`].

use std::fmt;

use serde_json::{Value, json};

/// The reference's error codes. Client-side codes (raised by cgs-client before anything is sent) are
/// included so the CLI can reuse them; they are marked as such.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    // ---- CCF governance API ----
    /// 400: the constitution's `validate` refused the proposal.
    ProposalFailedToValidate,
    /// 400: `created_at` is below the median of the kept replay window.
    ProposalCreatedTooLongAgo,
    /// 400: the same `created_at` and signature are already in the replay window.
    ProposalReplay,
    /// 400: `created_at` is out of range.
    InvalidCreatedAt,
    /// 404: no proposal with this id.
    ProposalNotFound,
    /// 400: a resource name (proposal id, member id, transaction id) is malformed or mismatched.
    InvalidResourceName,
    /// 403: the caller may not do this (withdraw of another's proposal, ack with no update).
    AuthorizationFailed,
    /// 400: the proposal is no longer Open.
    ProposalNotOpen,
    /// 400: the member already submitted a different ballot.
    VoteAlreadyExists,
    /// 400: the body is not what the route expects.
    InvalidInput,
    /// 404: no ballot from this member.
    VoteNotFound,
    /// 404: no such member / state digest.
    ResourceNotFound,
    /// 401 (COSE layer) or 400 (path ≠ signer): the authentication does not fit the request.
    InvalidAuthenticationInfo,
    /// 400: the acknowledged state digest differs from the one issued.
    StateDigestMismatch,
    /// 400: unknown `api-version`.
    UnsupportedApiVersionValue,
    /// 500: an internal failure (apply failed at create time, no signature yet).
    InternalError,
    // ---- CGS app: caller ----
    /// 403: the jwt caller is not a registered user identity.
    CallerNotAuthorized,
    /// 403: the jwt caller's tenant is not the registered one.
    CallerTenantNotAuthorized,
    // ---- CGS app: contracts ----
    /// 405: the contract is accepted and can no longer change.
    ContractAlreadyAccepted,
    /// 400: the body has no `data`.
    DataMissing,
    /// 409: the contract exists and no `version` was sent.
    ContractAlreadyExists,
    /// 412: the sent `version` is not the current one.
    PreconditionFailed,
    /// 503: the current view is not known yet.
    ViewNotKnown,
    /// 404: no such contract.
    ContractNotFound,
    /// 400: a bad query parameter (`state`).
    InvalidParameter,
    /// 400: the contract is not accepted.
    ContractNotAccepted,
    /// (status reason only) execution disabled by a member.
    ContractDisabled,
    /// 400: option not in {execution, logging, telemetry}, or not settable directly.
    InvalidOption,
    // ---- CGS app: clean-room callers ----
    /// 400: a clean-room call without attestation.
    AttestationMissing,
    /// 400: the SNP attestation does not verify or does not match the policy.
    VerifySnpAttestationFailed,
    /// 400: the jwt claims do not match the policy.
    VerifyJwtAttestationFailed,
    /// 400: the route does not support this authentication.
    UnsupportedAuthPolicy,
    /// 400: unknown attestation platform.
    UnsupportedPlatform,
    /// 400: the report's report_data does not bind the given public key.
    ReportDataMismatch,
    /// 400: no `sign` in the body.
    SignatureMissing,
    /// 400: the RSA-PSS signature does not verify.
    SignatureMismatch,
    /// 400: no `timestamp`.
    TimestampMissing,
    /// 400: `timestamp` > 9999999999999.
    TimestampTooLarge,
    /// 400: no `encrypt` in the body.
    EncryptionMissing,
    // ---- CGS app: secrets ----
    /// 400: secret value over 25 600 characters.
    ValueTooLarge,
    /// 400: empty secret value.
    ValueMissing,
    /// 404: no such secret.
    SecretNotFound,
    // ---- CGS app: member documents ----
    /// 405: the document is accepted.
    DocumentAlreadyAccepted,
    /// 400: the body has no `contractId`.
    ContractIdMissing,
    /// 409: the document exists and no version was sent.
    DocumentAlreadyExists,
    /// 404: no such document.
    DocumentNotFound,
    // ---- cgs-client side (never sent by the service) ----
    /// 400 (client): the contract changed since the given version.
    ContractModified,
    /// 400 (client): propose without a version.
    VersionMissing,
    /// 400 (client): vote without a proposal id.
    ProposalIdMissing,
    /// 400 (client): vote on a contract that is not proposed.
    ContractNotProposed,
    /// 400 (client): vote with a proposal id that is not the contract's.
    ProposalIdMismatch,
}

impl ErrorCode {
    /// The code as the reference spells it on the wire.
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            ProposalFailedToValidate => "ProposalFailedToValidate",
            ProposalCreatedTooLongAgo => "ProposalCreatedTooLongAgo",
            ProposalReplay => "ProposalReplay",
            InvalidCreatedAt => "InvalidCreatedAt",
            ProposalNotFound => "ProposalNotFound",
            InvalidResourceName => "InvalidResourceName",
            AuthorizationFailed => "AuthorizationFailed",
            ProposalNotOpen => "ProposalNotOpen",
            VoteAlreadyExists => "VoteAlreadyExists",
            InvalidInput => "InvalidInput",
            VoteNotFound => "VoteNotFound",
            ResourceNotFound => "ResourceNotFound",
            InvalidAuthenticationInfo => "InvalidAuthenticationInfo",
            StateDigestMismatch => "StateDigestMismatch",
            UnsupportedApiVersionValue => "UnsupportedApiVersionValue",
            InternalError => "InternalError",
            CallerNotAuthorized => "CallerNotAuthorized",
            CallerTenantNotAuthorized => "CallerTenantNotAuthorized",
            ContractAlreadyAccepted => "ContractAlreadyAccepted",
            DataMissing => "DataMissing",
            ContractAlreadyExists => "ContractAlreadyExists",
            PreconditionFailed => "PreconditionFailed",
            ViewNotKnown => "ViewNotKnown",
            ContractNotFound => "ContractNotFound",
            InvalidParameter => "InvalidParameter",
            ContractNotAccepted => "ContractNotAccepted",
            ContractDisabled => "ContractDisabled",
            InvalidOption => "InvalidOption",
            AttestationMissing => "AttestationMissing",
            VerifySnpAttestationFailed => "VerifySnpAttestationFailed",
            VerifyJwtAttestationFailed => "VerifyJwtAttestationFailed",
            UnsupportedAuthPolicy => "UnsupportedAuthPolicy",
            UnsupportedPlatform => "UnsupportedPlatform",
            ReportDataMismatch => "ReportDataMismatch",
            SignatureMissing => "SignatureMissing",
            SignatureMismatch => "SignatureMismatch",
            TimestampMissing => "TimestampMissing",
            TimestampTooLarge => "TimestampTooLarge",
            EncryptionMissing => "EncryptionMissing",
            ValueTooLarge => "ValueTooLarge",
            ValueMissing => "ValueMissing",
            SecretNotFound => "SecretNotFound",
            DocumentAlreadyAccepted => "DocumentAlreadyAccepted",
            ContractIdMissing => "ContractIdMissing",
            DocumentAlreadyExists => "DocumentAlreadyExists",
            DocumentNotFound => "DocumentNotFound",
            ContractModified => "ContractModified",
            VersionMissing => "VersionMissing",
            ProposalIdMissing => "ProposalIdMissing",
            ContractNotProposed => "ContractNotProposed",
            ProposalIdMismatch => "ProposalIdMismatch",
        }
    }

    /// The HTTP status the reference answers this code with by default.
    pub fn default_status(self) -> u16 {
        use ErrorCode::*;
        match self {
            ProposalNotFound | VoteNotFound | ResourceNotFound | ContractNotFound
            | SecretNotFound | DocumentNotFound => 404,
            AuthorizationFailed | CallerNotAuthorized | CallerTenantNotAuthorized => 403,
            InvalidAuthenticationInfo => 401,
            ContractAlreadyAccepted | DocumentAlreadyAccepted => 405,
            ContractAlreadyExists | DocumentAlreadyExists => 409,
            PreconditionFailed => 412,
            InternalError => 500,
            ViewNotKnown => 503,
            _ => 400,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answer of the governance service: status, code, message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// The reference's error code.
    pub code: ErrorCode,
    /// A message naming the thing concerned (proposal id, member id, contract id). Never secrets.
    pub message: String,
}

impl ApiError {
    /// An error with the code's default status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status: code.default_status(),
            code,
            message: message.into(),
        }
    }

    /// The same error with another status (for the codes CCF answers with two statuses).
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The response body `{"error":{"code":…,"message":…}}`.
    pub fn body(&self) -> Value {
        json!({"error": {"code": self.code.as_str(), "message": self.message}})
    }
}

/// Shorthand for results of the governance state machine.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_the_reference_shape() {
        let e = ApiError::new(
            ErrorCode::PreconditionFailed,
            "The operation specified a version that is different from the version available at the server.",
        );
        assert_eq!(e.status(), 412);
        assert_eq!(
            e.body().to_string(),
            r#"{"error":{"code":"PreconditionFailed","message":"The operation specified a version that is different from the version available at the server."}}"#
        );
    }

    #[test]
    fn statuses_follow_the_reference() {
        use ErrorCode::*;
        for (code, status) in [
            (ContractAlreadyAccepted, 405),
            (ContractAlreadyExists, 409),
            (PreconditionFailed, 412),
            (DataMissing, 400),
            (ViewNotKnown, 503),
            (ContractNotFound, 404),
            (VoteAlreadyExists, 400),
            (AuthorizationFailed, 403),
            (InvalidAuthenticationInfo, 401),
            (DocumentAlreadyAccepted, 405),
            (SecretNotFound, 404),
            (InternalError, 500),
        ] {
            assert_eq!(code.default_status(), status, "{code}");
        }
        let e = ApiError::new(InvalidAuthenticationInfo, "x").with_status(400);
        assert_eq!(e.status(), 400);
    }
}
