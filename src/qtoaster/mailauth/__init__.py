"""Mail authentication: DKIM signing and verification, SPF, DMARC, ARC, SRS and the
Authentication-Results header (issue 14, DESIGN.md section 7).

A service layer between ``policy`` and the services below it: the DATA checks of the
policy pipeline, the send role (signing, sealing, sender rewriting) and the CLI
(``qtoaster dkim``, ``qtoaster dns``) use it; it imports only the layers below it
(``net``, ``tls``, ``directory``, ``config``, ``core``...) and never a role.
"""
