"""Input sources (folder, camera): components that claim inputs and submit them to the daemon."""
