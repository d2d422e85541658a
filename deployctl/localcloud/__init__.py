"""Running the local cloud for a `local` environment: start/stop the emulator process, provision what the
config declares (as Terraform would), and find what is running."""
