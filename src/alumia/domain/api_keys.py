"""Which org API keys may be looked up where: the rule every caller check applies before the database."""

TEST_PREFIX = "alm_test_"
LIVE_PREFIX = "alm_live_"


def key_refusal(bearer: str | None, *, production: bool) -> str | None:
    """Why `bearer` cannot authenticate in this environment (the 401 message), or None when it may be
    looked up. Keys made outside production (`alm_test_`) never work in production, so a key copied from a
    development or demo set-up that shares the database cannot spend there."""
    if not bearer or not bearer.startswith("alm_"):
        return "send Authorization: Bearer alm_<env>_<key>"
    if production and bearer.startswith(TEST_PREFIX):
        return (f"{TEST_PREFIX} keys do not work in production; create an {LIVE_PREFIX} key "
                "(`alumia apikey create` on the production server, or the dashboard)")
    return None
