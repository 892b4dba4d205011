//! The content repository's files, as the rest of the server stores and reads them: uploads
//! kept in the media directory, and copies of other servers' files.

use ruma::UserId;

use super::{Services, random_string};
use crate::error::Error;

impl Services {
    /// Stores a file in the content repository; returns its `mxc://` address.
    pub async fn store_media(
        &self,
        bytes: &[u8],
        content_type: Option<&str>,
        filename: Option<&str>,
        uploader: &UserId,
    ) -> Result<ruma::OwnedMxcUri, Error> {
        let media_id = random_string(24);
        let path = self.media_dir.join(&media_id);
        let partial = self.media_dir.join(format!("{media_id}.partial"));
        tokio::fs::write(&partial, bytes)
            .await
            .map_err(|e| Error::Internal(format!("writing media: {e}")))?;
        tokio::fs::rename(&partial, &path)
            .await
            .map_err(|e| Error::Internal(format!("writing media: {e}")))?;
        self.store
            .create_media(&crate::store::MediaRecord {
                media_id: media_id.clone(),
                content_type: content_type.map(str::to_owned),
                filename: filename.map(str::to_owned),
                size: i64::try_from(bytes.len()).unwrap_or(i64::MAX),
                uploader: uploader.to_string(),
                // Uploads are served on the authenticated endpoints only (Matrix 1.11).
                unauthenticated: false,
            })
            .await?;
        Ok(ruma::OwnedMxcUri::from(format!(
            "mxc://{}/{media_id}",
            self.server_name
        )))
    }

    /// A file of this server's content repository by its `mxc://` address: its bytes and
    /// content type; `None` for another server's or an unknown file.
    pub async fn read_media(
        &self,
        uri: &ruma::MxcUri,
    ) -> Result<Option<(Vec<u8>, Option<String>)>, Error> {
        let Ok((server, media_id)) = uri.parts() else {
            return Ok(None);
        };
        if server != self.server_name || !crate::api::client::media::is_valid_media_id(media_id) {
            return Ok(None);
        }
        let Some(record) = self.store.media(media_id).await? else {
            return Ok(None);
        };
        self.read_media_file(record).await.map(Some)
    }

    /// The bytes and content type of a file of the media directory.
    async fn read_media_file(
        &self,
        record: crate::store::MediaRecord,
    ) -> Result<(Vec<u8>, Option<String>), Error> {
        let bytes = tokio::fs::read(self.media_dir.join(&record.media_id))
            .await
            .map_err(|e| Error::Internal(format!("reading media {}: {e}", record.media_id)))?;
        Ok((bytes, record.content_type))
    }

    /// A file of any server by its `mxc://` address: this server's, or the local copy of
    /// another server's; `None` for an unknown file or one not fetched yet.
    pub async fn read_any_media(
        &self,
        uri: &ruma::MxcUri,
    ) -> Result<Option<(Vec<u8>, Option<String>)>, Error> {
        let Ok((server, media_id)) = uri.parts() else {
            return Ok(None);
        };
        if server == self.server_name {
            return self.read_media(uri).await;
        }
        let Some(record) = self.store.remote_media(server.as_str(), media_id).await? else {
            return Ok(None);
        };
        self.read_media_file(record).await.map(Some)
    }
}
