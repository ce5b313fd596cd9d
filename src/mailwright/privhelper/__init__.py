"""The privileged helper: the small root process that a daemon without root asks for the
few things only root can do (local delivery as the recipient, maildrop files of other
users). ``protocol`` is the wire format, ``server`` the root side, ``client`` the
daemon's side. See ``docs/service.md``.
"""
