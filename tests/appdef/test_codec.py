"""How Python values are kept in the store (apis/_pycodec.py), and ApplicationDefinition → App."""

from __future__ import annotations

import os

import pytest

from apis import App, ApplicationDefinition, Job
from apis import _pycodec as codec


@pytest.mark.parametrize("value", [None, True, 3, 2.5, "hi", "3", [1, "a"], {"k": [1, 2]}, "", {"$file": "x"}])
def test_parameters_round_trip(value):
    assert codec.decode_param(codec.encode_param(value)) == value


def test_json_values_stay_readable_and_others_are_pickled():
    assert codec.encode_param(3) == "3"
    assert codec.encode_param("hi") == '"hi"'
    assert codec.encode_param((1, 2)).startswith("cloudpickle:")
    assert codec.decode_param(codec.encode_param((1, 2))) == (1, 2)
    assert codec.decode_param(codec.encode_param({1: "int key"})) == {1: "int key"}


def test_a_parameter_written_by_hand_is_its_string_or_json():
    assert codec.decode_param("world") == "world"
    assert codec.decode_param("42") == 42


def test_results_inline_pickled_or_in_a_file(tmp_path):
    path = str(tmp_path / "r.pkl")
    assert codec.encode_result(10, path) == (10, None)
    enc, data = codec.encode_result((1, 2), path)
    assert data is None and codec.decode_result(enc) == (1, 2)
    tagged, data = codec.encode_result({"$cloudpickle": "not a tag"}, path)
    assert data is None and codec.decode_result(tagged) == {"$cloudpickle": "not a tag"}
    big = "x" * (codec.INLINE_CAP + 1)
    enc, data = codec.encode_result(big, path)
    assert enc == {"$file": path, "bytes": len(data)}
    with open(path, "wb") as f:
        f.write(data)
    assert codec.decode_result(enc) == big


def test_a_result_over_the_file_cap_is_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(codec, "FILE_CAP", 1000)
    with pytest.raises(codec.ResultTooLarge):
        codec.encode_result(os.urandom(codec.INLINE_CAP), str(tmp_path / "r"))


def test_exceptions_keep_their_text_and_pickle():
    text, data = codec.encode_exception(ValueError("bad x"))
    assert text == "ValueError: bad x"
    err = codec.b64unpickle(data)
    assert type(err) is ValueError and str(err) == "bad x"


class Hello(ApplicationDefinition):
    """Says hello."""

    site = "laptop"
    command_template = "echo Hello, {{ say_hello_to }}! {{ punctuation }}"
    parameters = {"punctuation": {"default": "!!", "help": "what ends it"}}
    environment_variables = {"GREETING": "1"}
    cleanup_files = ["*.tmp"]
    transfers = {"input_file": {"direction": "in", "local_path": "in.dat", "description": "input"}}

    def shell_preamble(self):
        return ["module load hello", "export X=1"]

    def postprocess(self):
        self.job.state = "POSTPROCESSED"


def test_an_application_definition_declares_its_app():
    app = Hello.to_app()
    assert app.name == "hello"
    s = app.spec
    assert s.site == "laptop"
    assert s.command == "echo Hello, {{ say_hello_to }}! {{ punctuation }}"
    assert s.parameters["say_hello_to"].required is True
    assert s.parameters["punctuation"].required is False and s.parameters["punctuation"].default == "!!"
    assert s.environment == {"GREETING": "1"} and s.cleanup_files == ["*.tmp"]
    assert s.transfers["input_file"].local_path == "in.dat"
    assert s.preamble == "module load hello\nexport X=1"
    assert s.python.module == __name__ and s.python.class_name == "Hello" and s.python.hooks == ["postprocess"]
    assert s.description == "Says hello."
    assert App.model_validate(app.to_dict()) == app


def test_a_python_app_infers_its_parameters_from_run():
    class Scaled(ApplicationDefinition):
        def run(self, x, scale=2, *args, **kwargs):
            return x * scale

    app = Scaled.to_app()
    assert app.spec.command is None
    assert app.spec.parameters["x"].required and not app.spec.parameters["scale"].required
    assert set(app.spec.parameters) == {"x", "scale"}
    assert app.spec.python.module is None and app.spec.python.payload  # defined in a function


def test_submit_unsaved_separates_job_keywords_from_parameters(monkeypatch):
    monkeypatch.setattr(Hello, "_ensure_app", classmethod(lambda cls, ns: "hello"))
    job = Hello.submit("demo/1", save=False, say_hello_to="world", tags={"exp": "a"}, num_nodes=2,
                       data={"k": 1})
    assert isinstance(job, Job) and not job.metadata.resource_version
    assert job.app_id == "hello" and str(job.workdir) == "demo/1"
    assert job.parameters == {"say_hello_to": "world"}
    assert job.tags == {"exp": "a"} and job.num_nodes == 2 and job.data == {"k": 1}


def test_app_id_takes_the_class_or_its_balsam_name():
    assert Job(app_id="Hello", workdir="a").app_id == "hello"
    assert Job(app_id=Hello, workdir="a").app_id == "hello"
    assert Job(app_id="hello", workdir="a").app_id == "hello"
    job = Job(app_id="x", workdir="a")
    job.app_id = "My_App"
    assert job.app_id == "my-app"
