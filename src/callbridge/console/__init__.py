"""The browser console at `/` and the embeddable JS client, served as static files."""
