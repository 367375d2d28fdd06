"""The CouchDB / Cloudant document backend."""
