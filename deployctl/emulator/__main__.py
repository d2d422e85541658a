from deployctl.emulator.server import main

main()
