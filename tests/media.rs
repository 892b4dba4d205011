//! The content repository: upload, download, thumbnails, limits.

#![allow(clippy::unwrap_used)]

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

/// A PNG whose header claims `width`×`height` pixels, with no pixels.
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let crc32 = |bytes: &[u8]| {
        let mut crc = 0xffff_ffffu32;
        for byte in bytes {
            crc ^= u32::from(*byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    };
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut body = kind.to_vec();
        body.extend(data);
        let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
        chunk.extend(&body);
        chunk.extend(crc32(&body).to_be_bytes());
        chunk
    };
    let mut header = width.to_be_bytes().to_vec();
    header.extend(height.to_be_bytes());
    header.extend([8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &header));
    png.extend(chunk(b"IDAT", &[]));
    png.extend(chunk(b"IEND", &[]));
    png
}

/// Uploads a PNG; returns its media id.
async fn upload_png(server: &TestServer, token: &str, png: Vec<u8>) -> String {
    let uploaded = server
        .raw(
            Method::POST,
            "/_matrix/media/v3/upload",
            Some(token),
            Some("image/png"),
            png,
        )
        .await
        .assert_ok();
    uploaded["content_uri"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned()
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
    let png_id = upload_png(&server, &alice, tiny_png()).await;
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
    // Thumbnails come in standard sizes at least as large as asked for: 16×16 → 32×32.
    let decoded = image::load_from_memory(&thumb.body).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (32, 16));
    let cropped = server
        .get(&format!("/_matrix/client/v1/media/thumbnail/test.example/{png_id}?width=16&height=16&method=crop"), &alice)
        .await;
    let decoded = image::load_from_memory(&cropped.body).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (32, 32));
    // Each is made once and kept: what was kept is what is served.
    let kept = server
        .services
        .config
        .server
        .data_dir
        .join("thumbnails")
        .join(&png_id);
    let mut files: Vec<String> = std::fs::read_dir(&kept)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["32x32-crop", "32x32-scale"]);
    std::fs::write(kept.join("32x32-scale"), &cropped.body).unwrap();
    let again = server
        .get(&format!("/_matrix/client/v1/media/thumbnail/test.example/{png_id}?width=20&height=10&method=scale"), &alice)
        .await;
    assert_eq!(again.body, cropped.body, "served from what was kept");
    // An image that claims to be enormous is refused before it is decoded.
    for (width, height, status, errcode) in [
        (30_000, 30_000, 413, "M_TOO_LARGE"),
        (100_001, 1, 413, "M_TOO_LARGE"),
        (1, 2_000_000_000, 413, "M_TOO_LARGE"),
        // A plausible header and no pixels: no thumbnail.
        (64, 64, 404, "M_NOT_FOUND"),
    ] {
        let bomb_id = upload_png(&server, &alice, png_claiming(width, height)).await;
        server
            .get(
                &format!(
                    "/_matrix/client/v1/media/thumbnail/test.example/{bomb_id}?width=96&height=96"
                ),
                &alice,
            )
            .await
            .assert_error(status, errcode);
    }
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

#[tokio::test]
async fn files_of_any_server_are_read_by_their_address() {
    let server = TestServer::new().await;
    let services = &server.services;
    // Another server's file, copied here as federation fetches it.
    std::fs::create_dir_all(&services.media_dir).unwrap();
    std::fs::write(services.media_dir.join("remote-copy"), b"their bytes").unwrap();
    services
        .store
        .create_remote_media(
            "other.example",
            "abc",
            &causeway_matrix::store::MediaRecord {
                media_id: "remote-copy".into(),
                content_type: Some("image/png".into()),
                filename: None,
                size: 11,
                uploader: String::new(),
                unauthenticated: false,
            },
        )
        .await
        .unwrap();
    let read = |uri: &str| {
        let uri = ruma::OwnedMxcUri::from(uri);
        async move { services.read_any_media(&uri).await.unwrap() }
    };
    assert_eq!(
        read("mxc://other.example/abc").await,
        Some((b"their bytes".to_vec(), Some("image/png".to_owned())))
    );
    // Not fetched yet, or nothing at all: none.
    assert_eq!(read("mxc://other.example/missing").await, None);
    assert_eq!(read("not an address").await, None);
    // This server's own files are read as ever; another server's copy is not one of them.
    let (alice, _) = server.register("alice").await;
    let alice = ruma::UserId::parse(alice.as_str()).unwrap();
    let own = services
        .store_media(b"ours", Some("text/plain"), None, &alice)
        .await
        .unwrap();
    assert_eq!(
        read(own.as_str()).await,
        Some((b"ours".to_vec(), Some("text/plain".to_owned())))
    );
    assert_eq!(
        services
            .read_media(&ruma::OwnedMxcUri::from("mxc://other.example/abc"))
            .await
            .unwrap(),
        None
    );
}
