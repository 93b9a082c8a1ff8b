//! `POST /convert`: the CRD conversion webhook for the SMI kinds.
//!
//! The API server posts an `apiextensions.k8s.io/v1` `ConversionReview`; the answer carries
//! the request's `uid`, `result.status` `Success` with `convertedObjects` (in the request's
//! order, each in the desired `apiVersion`) or `Failed` with a message. One object that
//! cannot be converted fails the whole review, as the API server requires. A body that is
//! not a v1 `ConversionReview` with a request is answered 400.
//!
//! The conversions themselves are `lanyard_index::api::smi::convert`.

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kube::core::Status;
use kube::core::conversion::{ConversionRequest, ConversionResponse, ConversionReview};
use lanyard_index::api::smi::convert::convert;

/// The review `apiVersion` and `kind` this endpoint answers (the CRDs ask for v1 only).
const META_API_VERSION_V1: &str = "apiextensions.k8s.io/v1";
const META_KIND: &str = "ConversionReview";

/// The HTTP handler.
pub async fn handle(body: Bytes) -> Response {
    let request = match parse(&body) {
        Ok(request) => request,
        Err(message) => {
            tracing::warn!(%message, "bad conversion request");
            return (StatusCode::BAD_REQUEST, message).into_response();
        }
    };
    let span = tracing::info_span!(
        "convert",
        uid = %request.uid,
        desired = %request.desired_api_version,
        objects = request.objects.len(),
    );
    let _entered = span.enter();
    let response = review(request);
    if response.result.is_failure() {
        tracing::warn!(message = %response.result.message, "conversion failed");
    } else {
        tracing::debug!("converted");
    }
    axum::Json(response.into_review()).into_response()
}

/// Reads the body as a v1 `ConversionReview` holding a request.
pub fn parse(body: &[u8]) -> Result<ConversionRequest, String> {
    let review: ConversionReview = serde_json::from_slice(body)
        .map_err(|e| format!("the body is not a ConversionReview: {e}"))?;
    if review.types.api_version != META_API_VERSION_V1 || review.types.kind != META_KIND {
        return Err(format!(
            "expected a {META_API_VERSION_V1} {META_KIND}, got {} {}",
            review.types.api_version, review.types.kind
        ));
    }
    ConversionRequest::from_review(review).map_err(|e| e.to_string())
}

/// Converts every object of `request` (pure: no I/O).
pub fn review(request: ConversionRequest) -> ConversionResponse {
    let desired = request.desired_api_version.clone();
    let converted: Result<Vec<_>, String> = request
        .objects
        .iter()
        .enumerate()
        .map(|(i, object)| {
            convert(object, &desired)
                .map_err(|e| format!("object {} of {}: {e}", i + 1, request.objects.len()))
        })
        .collect();
    let response = ConversionResponse::for_request(request);
    match converted {
        Ok(objects) => response.success(objects),
        Err(message) => response.failure(Status::failure(&message, "Invalid")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn request(desired: &str, objects: Vec<Value>) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "ConversionReview",
            "request": {"uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "desiredAPIVersion": desired, "objects": objects},
        }))
        .unwrap()
    }

    fn answer(body: &[u8]) -> Value {
        serde_json::to_value(review(parse(body).unwrap()).into_review()).unwrap()
    }

    #[test]
    fn a_review_converts_every_object_in_order() {
        let v1 = json!({"apiVersion": "split.smi-spec.io/v1alpha1", "kind": "TrafficSplit",
            "metadata": {"name": "a"}, "spec": {"service": "web",
                "backends": [{"service": "web-v1", "weight": "500m"}]}});
        let v4 = json!({"apiVersion": "split.smi-spec.io/v1alpha4", "kind": "TrafficSplit",
            "metadata": {"name": "b"}, "spec": {"service": "web",
                "backends": [{"service": "web-v1", "weight": 7}]}});
        let got = answer(&request("split.smi-spec.io/v1alpha2", vec![v1, v4]));
        assert_eq!(got["apiVersion"], "apiextensions.k8s.io/v1");
        assert_eq!(got["kind"], "ConversionReview");
        let response = &got["response"];
        assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(response["result"]["status"], "Success");
        let objects = response["convertedObjects"].as_array().unwrap();
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[0]["metadata"]["name"], "a");
        assert_eq!(objects[0]["spec"]["backends"][0]["weight"], 5);
        assert_eq!(objects[1]["spec"]["backends"][0]["weight"], 7);
        for o in objects {
            assert_eq!(o["apiVersion"], "split.smi-spec.io/v1alpha2");
        }
    }

    #[test]
    fn one_bad_object_fails_the_review() {
        let good = json!({"apiVersion": "specs.smi-spec.io/v1alpha4", "kind": "TCPRoute",
            "metadata": {"name": "db"}});
        let bad = json!({"apiVersion": "specs.smi-spec.io/v1alpha4", "kind": "UDPRoute",
            "metadata": {"name": "dns"}});
        let got = answer(&request("specs.smi-spec.io/v1alpha3", vec![good, bad]));
        let response = &got["response"];
        assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(response["result"]["status"], "Failure");
        let message = response["result"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("object 2 of 2: UDPRoute in specs.smi-spec.io/v1alpha4 is not"),
            "{message}"
        );
        assert_eq!(response["convertedObjects"], json!([]));
    }

    #[test]
    fn bodies_that_are_not_v1_reviews_are_refused() {
        assert!(
            parse(b"{not json")
                .unwrap_err()
                .starts_with("the body is not a ConversionReview")
        );
        let v1beta1 = json!({"apiVersion": "apiextensions.k8s.io/v1beta1", "kind": "ConversionReview",
            "request": {"uid": "u", "desiredAPIVersion": "x/y", "objects": []}});
        assert!(
            parse(v1beta1.to_string().as_bytes())
                .unwrap_err()
                .contains("expected a apiextensions.k8s.io/v1 ConversionReview")
        );
        let no_request =
            json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview"});
        assert_eq!(
            parse(no_request.to_string().as_bytes()).unwrap_err(),
            "request missing in ConversionReview"
        );
    }
}
