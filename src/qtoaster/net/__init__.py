"""Network plumbing shared by the roles, generic over the protocol they speak.

``driver`` drives a sans-IO engine over an asyncio transport (the one writer to the
socket), ``serve`` is a worker's accept-and-drain loop, ``resolver`` builds DNS resolvers.
It imports no protocol engine and no role.
"""
