//! The Gateway API kinds as kube resources, so the same reflectors watch them as the core kinds. They are
//! optional: a cluster without the Gateway API CRDs answers 404 to their lists, which counts as listed and empty
//! (see `watch::Watches::spawn`), and they are picked up once the CRDs are installed.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};

use crate::model::gateway::{
    BackendTlsPolicy, Gateway, GatewayClass, GrpcRoute, HttpRoute, ReferenceGrant, TcpRoute, TlsRoute, GROUP,
};

macro_rules! gateway_resource {
    ($ty:ty, $kind:literal, $plural:literal, $scope:ty) => {
        impl kube::Resource for $ty {
            type DynamicType = ();
            type Scope = $scope;

            fn kind((): &()) -> Cow<'_, str> {
                Cow::Borrowed($kind)
            }
            fn group((): &()) -> Cow<'_, str> {
                Cow::Borrowed(GROUP)
            }
            fn version((): &()) -> Cow<'_, str> {
                Cow::Borrowed("v1")
            }
            fn plural((): &()) -> Cow<'_, str> {
                Cow::Borrowed($plural)
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

gateway_resource!(GatewayClass, "GatewayClass", "gatewayclasses", ClusterResourceScope);
gateway_resource!(Gateway, "Gateway", "gateways", NamespaceResourceScope);
gateway_resource!(HttpRoute, "HTTPRoute", "httproutes", NamespaceResourceScope);
gateway_resource!(GrpcRoute, "GRPCRoute", "grpcroutes", NamespaceResourceScope);
gateway_resource!(TlsRoute, "TLSRoute", "tlsroutes", NamespaceResourceScope);
gateway_resource!(TcpRoute, "TCPRoute", "tcproutes", NamespaceResourceScope);
gateway_resource!(
    ReferenceGrant,
    "ReferenceGrant",
    "referencegrants",
    NamespaceResourceScope
);
gateway_resource!(
    BackendTlsPolicy,
    "BackendTLSPolicy",
    "backendtlspolicies",
    NamespaceResourceScope
);
