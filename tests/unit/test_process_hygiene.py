import sys


def test_locust_and_gevent_stay_out_of_the_pytest_process() -> None:
    # locust's gevent monkey-patches whatever imports it: load runs as its own process only.
    assert "gevent" not in sys.modules
    assert "locust" not in sys.modules
