"""Wire messages: one frozen dataclass per (stage, direction), versioned byte encoding.

Layout of every message (little-endian)::

    version u8 | stage u8 | kind u8 (0 request, 1 reply) | reserved u8 (0) |
    run_id u64 | round u32 | sender u64 | body

The header is 24 bytes so that the masked vector of a masked-input reply starts at a
multiple of 4 (offset 60): numpy then sums it in place without the unaligned-access
copy (about 40% of the summing cost at 100k parameters).

``from_bytes`` refuses (``ProtocolAbort``) another version, stage, kind, run, round or
sender than expected, truncated bodies and trailing bytes. Requests come from the
server (``sender == SERVER_ID``) and name their ``recipient``.

Stages: ADVERTISE (once per run), then MASKED_INPUT and UNMASK per round.

One decoder per message: every message is read by one body parser (its
``_read_fields``; for the two replies the server reads hot, ``_read_blocks``), after
one ``struct`` call checks the header (``Message._decode``). ``from_bytes`` returns the
dataclass; the replies' ``records_from_bytes`` returns the same parse as the blocks
lie on the wire (the masked vector and the ciphertexts of a masked-input reply as
zero-copy numpy arrays, the share and seed blocks of an unmask reply as bytes), with
no Python object per share, so both accept and refuse exactly the same bytes with the
same message. The server writes its per-node requests with ``encode_records`` /
``encode_parts``, byte-for-byte equal to ``to_bytes`` (tested).

Modules: ``binary`` (the bounds-checked field ``Reader``/``Writer``, also used by the
client state), ``codec`` (header, the ``Message`` base class and its decoding path),
``records`` (record types and layouts inside bodies) and ``messages`` (the six
messages). Import the names from this package.
"""

from lepton_fed.secagg.wire.codec import (
    HEADER_BYTES,
    MAX_COHORT,
    MAX_ROUNDS_PER_ADVERT,
    REPLY,
    REQUEST,
    SERVER_ID,
    WIRE_VERSION,
    Header,
    peek_header,
)
from lepton_fed.secagg.wire.messages import (
    AdvertiseReply,
    AdvertiseRequest,
    MaskedInputReply,
    MaskedInputRequest,
    UnmaskReply,
    UnmaskRequest,
)
from lepton_fed.secagg.wire.records import (
    CIPHERTEXT_BYTES,
    CT_DTYPE,
    SHARE_DTYPE,
    SIGNATURE_DTYPE,
    MemberKey,
    RoundKey,
    ShareCiphertext,
)

__all__ = [
    "CIPHERTEXT_BYTES",
    "CT_DTYPE",
    "HEADER_BYTES",
    "MAX_COHORT",
    "MAX_ROUNDS_PER_ADVERT",
    "REPLY",
    "REQUEST",
    "SERVER_ID",
    "SHARE_DTYPE",
    "SIGNATURE_DTYPE",
    "WIRE_VERSION",
    "AdvertiseReply",
    "AdvertiseRequest",
    "Header",
    "MaskedInputReply",
    "MaskedInputRequest",
    "MemberKey",
    "RoundKey",
    "ShareCiphertext",
    "UnmaskReply",
    "UnmaskRequest",
    "peek_header",
]
