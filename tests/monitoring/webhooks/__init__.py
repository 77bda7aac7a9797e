"""Tests of webhook receiving: schemes, secrets, dedupe, recording."""
