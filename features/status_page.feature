Feature: The status page and its metrics
  An operator turns on the status page to see at a glance what waits, what runs
  where and what failed and why, without reading a table in a terminal. Prometheus
  scrapes the same listener. The page only shows: nothing sent to it changes a case.

  Scenario: The status page is off unless the configuration turns it on
    Given caseflow is running
    Then no status page is served

  Scenario: A case moves across the status page as it flows
    Given the status page is turned on
    And caseflow is running
    And the case "liver_0001" for gpu_a is running and waits to be released
    Then the status page counts 1 case running
    When the job of "liver_0001" is released
    Then the status page counts 1 case in success
    And the status page shows the history of "liver_0001" as detected, stable, queued, gpu_locked, uploaded, running and success

  Scenario: The status page changes nothing
    Given the status page is turned on
    And caseflow is running
    And the case folder "liver_0002" whose job exits with code 3 was dropped into the inbox
    And the case "liver_0002" has ended in failure
    When someone asks the status page to retry "liver_0002"
    Then the status page refuses
    And the case "liver_0002" is failure

  Scenario: On an address other than loopback the page needs a token
    Given the status page is to listen on 0.0.0.0:8765 without a token file
    Then caseflow refuses to start, saying that web.token_file is required

  Scenario: Prometheus reads the cases and the hosts from the same listener
    Given the status page is turned on
    And caseflow is running
    When the case folder "liver_0003" is dropped into the inbox
    Then the case "liver_0003" ends in success
    And the metrics count 1 case in success on gpu_a
    And the metrics show no case name as a label
