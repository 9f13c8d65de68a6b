// Copyright ⓒ 2024-2025 Peter Morgan <peter.james.morgan@gmail.com>
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
// Modified by the dissuade project (vendor/tansu-storage): the EndTxn service
// (backport of upstream 76addff); see vendor/README.md for provenance and the diff.

pub(crate) mod add_offsets;
pub(crate) mod add_partitions;
pub(crate) mod end;
pub(crate) mod offset_commit;
