"""The inbound pipeline: sources, parsing, classification, matching.

Mail that comes back to us (replies, bounces, complaints, out-of-office answers, `mailto:`
unsubscribes) is read here as pure functions over bytes: no I/O, no Temporal, no logging.
`parsing.parse` turns raw RFC 5322 bytes into an `InboundMessage` (or refuses them, saying why),
`classification.classify` says what kind of message it is and what decided it, and
`excerpt.excerpt` keeps a reply's new text; `imap.ImapReader` reads a sending mailbox (the one
module here that does I/O). Effects build on these.
`inbound/` imports `campaign_engine/` only.
"""
