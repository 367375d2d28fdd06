"""Refused records: every document the server refused from a phone, kept so a supervisor sees it."""
