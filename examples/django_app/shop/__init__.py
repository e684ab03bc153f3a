"""A minimal Django project showing the README's Django example (settings, analytics, view, middleware)."""
