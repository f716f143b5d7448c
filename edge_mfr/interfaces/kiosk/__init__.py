"""The kiosk: a small standard-library web server (live view, events, people, enrollment) split by job."""
