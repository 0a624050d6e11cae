# Written by the build (examples/demo-app/build.sh): the release's version and whether it is built broken.
VERSION = "1.0.0"
BROKEN = False
