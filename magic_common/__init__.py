"""Small utilities that several influx-magic packages need and that import nothing of ours.

- `magic_common.atomic`: crash-safe file replacement (state, outbox, catalogs).
- `magic_common.envsettings`: settings read from the environment and `.env`, with defaults
  each package declares for its own keys, and paths resolved against the project root.
- `magic_common.http_serving`: the bind error and the SIGTERM-clean serving loop of the small
  HTTP servers (inbox, fleet page).
"""
