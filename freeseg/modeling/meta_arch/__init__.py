"""Meta-architectures: ``OpenVocabulary`` (stage 2) and ``ProposalClipClassifier`` (stage 1)."""
from .open_vocabulary import OpenVocabulary
from .proposal_classifier import ProposalClipClassifier
from .vocabulary import TASK_PHRASES, TASK_TARGET_KEYS, Vocabulary, task_phrase

__all__ = ["OpenVocabulary", "ProposalClipClassifier", "TASK_PHRASES", "TASK_TARGET_KEYS", "Vocabulary", "task_phrase"]
