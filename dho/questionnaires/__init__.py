"""Symptom questionnaires: FHIR Questionnaires under config/symptoms/, the rules that
judge their answers, and the QuestionnaireResponses patients send."""
