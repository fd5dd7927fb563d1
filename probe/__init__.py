"""``satmon.probe``: predict the RL regime before spending RL compute.

Measures a model's reasoning faithfulness (the paper's pre-RL predictor), accuracy, raw and
faithful output diversity on a few prompts x k rollouts, with a judge behind one protocol
(:class:`ExactJudge`, :class:`TransformersJudge`, :class:`OpenAIJudge`). See
:mod:`satmon.probe.measure` for what is reported and :mod:`satmon.probe.rubric` for the rubric
template and the verdict parser; ``satmon probe --help`` for the command line. torch,
transformers and mlflow load only inside the functions that use them.
"""

from satmon.probe.chat_endpoint import ChatEndpoint, EndpointError
from satmon.probe.judges import (Agreement, ExactJudge, Judge, OpenAIJudge, TransformersJudge,
                                 Verdict, judge_agreement)
from satmon.probe.measure import (DEFAULT_FAITHFULNESS_THRESHOLD, ProbeError, ProbeResult,
                                  RegimeCall, predict_regime, probe)
from satmon.probe.rubric import RubricTemplate, load_template, parse_verdict

__all__ = ["Agreement", "ChatEndpoint", "DEFAULT_FAITHFULNESS_THRESHOLD", "EndpointError",
           "ExactJudge", "Judge", "OpenAIJudge", "ProbeError", "ProbeResult", "RegimeCall",
           "RubricTemplate", "TransformersJudge", "Verdict", "judge_agreement", "load_template",
           "parse_verdict", "predict_regime", "probe"]
