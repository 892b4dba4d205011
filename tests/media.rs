//! The content repository: upload, download, thumbnails, limits.

mod common;

use common::TestServer;
use http::Method;

fn tiny_png() -> Vec<u8> {
    let mut image = image::RgbImage::new(64, 32);
    for (x, _, pixel) in image.enumerate_pixels_mut() {
        *pixel = image::Rgb([(x * 4) as u8, 0, 200]);
    }
    let mut bytes = Vec::new();
    image::DynamicImage::ImageRgb8(image)
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .expect("encoding a PNG in memory");
    bytes
}

#[tokio::test]
async fn media_upload_download_and_thumbnails() {
    let server = TestServer::new().await;
    let (_, alice) = server.register("alice").await;
    let upload = server
        .raw(
            Method::POST,
            "/_matrix/media/v3/upload?filename=report%20final.pdf",
            Some(&alice),
            Some("application/pdf"),
            b"%PDF-1.4 hello".to_vec(),
        )
        .await
        .assert_ok();
    let uri = upload["content_uri"].as_str().unwrap();
    let (server_name, media_id) = uri.strip_prefix("mxc://").unwrap().split_once('/').unwrap();
    assert_eq!(server_name, "test.example");
    let download = server
        .get(
            &format!("/_matrix/client/v1/media/download/{server_name}/{media_id}"),
            &alice,
        )
        .await;
    assert_eq!(download.status, 200);
    assert_eq!(download.body, b"%PDF-1.4 hello");
    assert_eq!(download.headers["content-type"], "application/pdf");
    let disposition = download.headers["content-disposition"].to_str().unwrap();
    assert!(disposition.starts_with("attachment"), "{disposition}");
    assert!(
        disposition.contains("report final.pdf") || disposition.contains("report%20final.pdf"),
        "{disposition}"
    );
    // Whatever was uploaded, a browser neither sniffs another type nor runs it.
    assert_eq!(download.headers["x-content-type-options"], "nosniff");
    let policy = download.headers["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(policy.starts_with("sandbox;"), "{policy}");
    assert!(policy.contains("default-src 'none'"), "{policy}");
    assert!(policy.contains("script-src 'none'"), "{policy}");
    let missing = server
        .get(
            "/_matrix/client/v1/media/download/test.example/nothingHere",
            &alice,
        )
        .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.headers["x-content-type-options"], "nosniff");
    let other = server
        .get("/_matrix/client/v3/account/whoami", &alice)
        .await;
    assert!(other.headers.get("content-security-policy").is_none());
    // Authenticated media needs a token.
    server
        .call(
            Method::GET,
            &format!("/_matrix/client/v1/media/download/{server_name}/{media_id}"),
            None,
            None,
        )
        .await
        .assert_error(401, "M_MISSING_TOKEN");
    // The unauthenticated endpoints are frozen: media uploaded now is not served there.
    for path in [
        format!("/_matrix/media/v3/download/{server_name}/{media_id}"),
        format!("/_matrix/media/v3/download/{server_name}/{media_id}/other.pdf"),
        format!("/_matrix/media/v3/thumbnail/{server_name}/{media_id}?width=8&height=8"),
    ] {
        let legacy = server.call(Method::GET, &path, None, None).await;
        assert_eq!(legacy.headers["x-content-type-options"], "nosniff");
        legacy.assert_error(404, "M_NOT_FOUND");
    }
    // The download under another name, on the authenticated path.
    let renamed = server
        .get(
            &format!("/_matrix/client/v1/media/download/{server_name}/{media_id}/other.pdf"),
            &alice,
        )
        .await;
    assert_eq!(renamed.body, b"%PDF-1.4 hello");
    assert!(
        renamed.headers["content-disposition"]
            .to_str()
            .unwrap()
            .contains("other.pdf")
    );

    // Thumbnails of an image.
    let png = server
        .raw(
            Method::POST,
            "/_matrix/media/v3/upload",
            Some(&alice),
            Some("image/png"),
            tiny_png(),
        )
        .await
        .assert_ok();
    let png_id = png["content_uri"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let thumb = server
        .get(&format!("/_matrix/client/v1/media/thumbnail/test.example/{png_id}?width=16&height=16&method=scale"), &alice)
        .await;
    assert_eq!(
        thumb.status,
        200,
        "{}",
        String::from_utf8_lossy(&thumb.body)
    );
    assert_eq!(thumb.headers["content-type"], "image/png");
    let decoded = image::load_from_memory(&thumb.body).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (16, 8));
    let cropped = server
        .get(&format!("/_matrix/client/v1/media/thumbnail/test.example/{png_id}?width=16&height=16&method=crop"), &alice)
        .await;
    let decoded = image::load_from_memory(&cropped.body).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (16, 16));
    server
        .get(
            &format!(
                "/_matrix/client/v1/media/thumbnail/test.example/{media_id}?width=16&height=16"
            ),
            &alice,
        )
        .await
        .assert_error(404, "M_NOT_FOUND");

    // Limits and unknown media.
    let config = server
        .get("/_matrix/client/v1/media/config", &alice)
        .await
        .assert_ok();
    assert_eq!(config["m.upload.size"], 256 * 1024);
    server
        .raw(
            Method::POST,
            "/_matrix/media/v3/upload",
            Some(&alice),
            Some("application/octet-stream"),
            vec![0; 300 * 1024],
        )
        .await
        .assert_error(413, "M_TOO_LARGE");
    server
        .get(
            "/_matrix/client/v1/media/download/test.example/doesnotexist",
            &alice,
        )
        .await
        .assert_error(404, "M_NOT_FOUND");
    server
        .get(
            "/_matrix/client/v1/media/download/test.example/..%2F..%2Fetc%2Fpasswd",
            &alice,
        )
        .await
        .assert_error(404, "M_NOT_FOUND");
}
