// Copyright ⓒ 2024-2026 Peter Morgan <peter.james.morgan@gmail.com>
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.
//
// Added by the dissuade project (vendor/tansu-storage): backport of upstream
// 76addff832cbda6c4e3962299cdda6beaa1fc064 ("txn end"), with a storage API error
// answered as the response's error code; see vendor/README.md for provenance and
// the diff.

use rama::{Context, Service};
use tansu_sans_io::{ApiKey, EndTxnRequest, EndTxnResponse};
use tracing::instrument;

use crate::{Error, Result, Storage};

#[derive(Clone, Copy, Debug, Default, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct EndService;

impl ApiKey for EndService {
    const KEY: i16 = EndTxnRequest::KEY;
}

impl<G> Service<G, EndTxnRequest> for EndService
where
    G: Storage,
{
    type Response = EndTxnResponse;
    type Error = Error;

    #[instrument(skip(ctx, req))]
    async fn serve(
        &self,
        ctx: Context<G>,
        req: EndTxnRequest,
    ) -> Result<Self::Response, Self::Error> {
        ctx.state()
            .txn_end(
                req.transactional_id.as_str(),
                req.producer_id,
                req.producer_epoch,
                req.committed,
            )
            .await
            // dissuade: a fenced producer gets PRODUCER_FENCED, not a dropped
            // connection
            .or_else(|error| match error {
                Error::Api(error_code) => Ok(error_code),
                otherwise => Err(otherwise),
            })
            .map(|error_code| EndTxnResponse::default().error_code(i16::from(error_code)))
    }
}
