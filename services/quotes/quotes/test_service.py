"""Unit tests, run inside the image build."""

import unittest

from quotes.service import QUOTES, answer, pick


class AnswerTest(unittest.TestCase):
    def test_ready(self) -> None:
        self.assertEqual(answer("/ready", 1, {}), (200, "ready"))

    def test_version_names_the_release(self) -> None:
        status, body = answer("/version", 1, {"RELEASE": "abc", "IMAGE": "img@sha256:1"})
        self.assertEqual(status, 200)
        self.assertEqual(body, {"service": "quotes", "release": "abc", "image": "img@sha256:1"})

    def test_quotes_rotate(self) -> None:
        self.assertEqual([pick(i) for i in range(len(QUOTES) + 1)][-1], QUOTES[0])
        status, body = answer("/", 2, {"RELEASE": "r"})
        self.assertEqual((status, body["quote"], body["release"]), (200, QUOTES[2], "r"))

    def test_unknown_path_is_404(self) -> None:
        self.assertEqual(answer("/nope", 1, {})[0], 404)


if __name__ == "__main__":
    unittest.main()
