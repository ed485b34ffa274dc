"""The privacy core: what may leave the device, and how.

`hotlist` (the encrypted list and matching), `keys` (key files), `evidence` (sealed boxes),
`summaries` (non-hits as per-window counts or keyed tokens), `audit` (the hash chain), `acks`
(signed back-office acknowledgements), `listkey` (the list key sent from headquarters).
"""
