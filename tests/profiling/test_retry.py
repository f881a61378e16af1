import pytest

from fdi_keras.errors import DeviceUnavailableError, TransportError
from fdi_keras.profiling import RetryPolicy
from fdi_keras.profiling.retry import call_with_retries

FAST = RetryPolicy(retries=3, delay=0.001, max_delay=0.002)
OFFLINE = TransportError("error: device offline")


def failing(times, error=OFFLINE):
    calls = []

    def call():
        calls.append(1)
        if len(calls) <= times:
            raise error
        return "timed"

    return call, calls


def test_delays_double_up_to_the_cap():
    assert RetryPolicy().delays() == [1, 2, 4, 8, 16, 30, 30, 30]
    assert RetryPolicy(retries=3, delay=0.5).delays() == [0.5, 1.0, 2.0]
    assert RetryPolicy(retries=0).delays() == []


def test_a_transport_error_is_retried_until_the_device_answers():
    call, calls = failing(3)
    with pytest.warns(UserWarning, match=r"Device 'pixel' unreachable \(error: device offline\)"):
        assert call_with_retries(call, FAST, "pixel") == "timed"
    assert len(calls) == 4


def test_a_device_that_stays_away_stops_the_run_with_a_clear_error():
    call, calls = failing(4)
    with pytest.warns(UserWarning), pytest.raises(DeviceUnavailableError) as info:
        call_with_retries(call, FAST, "pixel", hint="Rerun to resume.")
    assert len(calls) == 4
    message = str(info.value)
    assert "'pixel' stayed unreachable: 4 attempts" in message
    assert "device offline" in message and message.endswith("Rerun to resume.")
    assert isinstance(info.value.__cause__, TransportError)


def test_other_errors_are_not_retried():
    call, calls = failing(1, RuntimeError("benchmark_model crashed on this model"))
    with pytest.raises(RuntimeError, match="crashed"):
        call_with_retries(call, FAST, "pixel")
    assert len(calls) == 1


def test_policy_argument_errors():
    with pytest.raises(ValueError, match="retries must be an integer >= 0"):
        RetryPolicy(retries=-1)
    with pytest.raises(ValueError, match="delay <= max_delay"):
        RetryPolicy(delay=5, max_delay=1)
