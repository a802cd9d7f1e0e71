//! Status conditions as [`attach`](super::attach) computes them: type, status, reason and message, with the
//! generation they describe. No clock here: the status writer adds `lastTransitionTime` (and keeps the one
//! already written while a condition's status holds).

/// One `metav1.Condition` without its transition time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
    /// The `metadata.generation` of the object the condition was computed from.
    pub observed_generation: Option<i64>,
}

impl Condition {
    pub fn new(type_: &'static str, status: bool, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
            observed_generation: None,
        }
    }

    pub fn status_str(&self) -> &'static str {
        if self.status {
            "True"
        } else {
            "False"
        }
    }
}

/// Sets `generation` on every condition of `list`.
pub(crate) fn observed(mut list: Vec<Condition>, generation: Option<i64>) -> Vec<Condition> {
    for c in &mut list {
        c.observed_generation = generation;
    }
    list
}

/// Condition types.
pub mod types {
    pub const ACCEPTED: &str = "Accepted";
    pub const PROGRAMMED: &str = "Programmed";
    pub const RESOLVED_REFS: &str = "ResolvedRefs";
    pub const CONFLICTED: &str = "Conflicted";
    pub const SUPPORTED_VERSION: &str = "SupportedVersion";
}

/// Condition reasons, as the Gateway API names them.
pub mod reasons {
    // GatewayClass
    pub const ACCEPTED: &str = "Accepted";
    pub const SUPPORTED_VERSION: &str = "SupportedVersion";
    // Gateway
    pub const PROGRAMMED: &str = "Programmed";
    pub const INVALID: &str = "Invalid";
    pub const LISTENERS_NOT_VALID: &str = "ListenersNotValid";
    pub const UNSUPPORTED_ADDRESS: &str = "UnsupportedAddress";
    // Listener
    pub const UNSUPPORTED_PROTOCOL: &str = "UnsupportedProtocol";
    pub const PORT_UNAVAILABLE: &str = "PortUnavailable";
    pub const RESOLVED_REFS: &str = "ResolvedRefs";
    pub const INVALID_CERTIFICATE_REF: &str = "InvalidCertificateRef";
    pub const INVALID_ROUTE_KINDS: &str = "InvalidRouteKinds";
    pub const REF_NOT_PERMITTED: &str = "RefNotPermitted";
    pub const NO_CONFLICTS: &str = "NoConflicts";
    pub const HOSTNAME_CONFLICT: &str = "HostnameConflict";
    pub const PROTOCOL_CONFLICT: &str = "ProtocolConflict";
    // Route
    pub const NOT_ALLOWED_BY_LISTENERS: &str = "NotAllowedByListeners";
    pub const NO_MATCHING_LISTENER_HOSTNAME: &str = "NoMatchingListenerHostname";
    pub const NO_MATCHING_PARENT: &str = "NoMatchingParent";
    pub const UNSUPPORTED_VALUE: &str = "UnsupportedValue";
    pub const INCOMPATIBLE_FILTERS: &str = "IncompatibleFilters";
    pub const INVALID_KIND: &str = "InvalidKind";
    pub const BACKEND_NOT_FOUND: &str = "BackendNotFound";
    /// Portico's own: a backendRef's Service port is targeted by a BackendTLSPolicy that cannot be used.
    pub const INVALID_BACKEND_TLS_POLICY: &str = "InvalidBackendTLSPolicy";
}
