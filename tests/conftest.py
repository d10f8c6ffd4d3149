from distributed.utils_test import (  # noqa: F401  (pytest fixtures)
    cleanup,
    client,
    cluster_fixture,
    loop,
    loop_in_thread,
)

import unnest.resolve

# unnest drives calls that involve no client on one private event loop in a
# daemon thread that lives as long as the process (like distributed's own
# offload thread). Start it before any test, so distributed's thread-leak
# check does not count it against the first test that needs it.
unnest.resolve._private_loop()
